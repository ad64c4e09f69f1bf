"""User data: image-folder trees and CSV/JSONL files -> Parquet shards -> training."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import make_tree, synthetic_spec
from shiftray.cli import main
from shiftray.config.load import spec_from_dict
from shiftray.data.loading import load_job_data
from shiftray.data.readers.imagefolder import ImageFolder
from shiftray.data.readers.parquet import ParquetDomains
from shiftray.data.table import shard_paths, write_shards
from shiftray.train.loop import train_loop_per_worker
from shiftray.train.run import LoopConfig


def test_image_folder_to_encoded_parquet_shards_and_back(tmp_path):
    make_tree(tmp_path / "tree")
    out = tmp_path / "pq"
    assert main(["data", "prepare", "imagefolder", "-o", f"root={tmp_path / 'tree'}", "-o", "image_size=16",
                 "--out", str(out), "--shard-rows", "5"]) == 0  # fmt: skip
    shards = sorted((out / "night").glob("train-*.parquet"))
    assert len(shards) == 3  # 12 images, 5 per shard
    table = pq.read_table(shards[0])
    assert table.schema.field("input").type == "binary"  # stored encoded, decoded by workers
    opts = ParquetDomains.Options(path=str(out))
    assert ParquetDomains.domains(opts) == ["night", "photo"]
    assert ParquetDomains.class_names(opts) == ["blue", "red"]
    got = ParquetDomains.read("night", "train", opts)
    direct = ImageFolder.read(
        "night", "train", ImageFolder.Options(root=str(tmp_path / "tree"), image_size=16)
    )
    assert got.x.shape == (12, 3, 16, 16) and got.x.dtype == np.float32
    # the train rows: the same images in a seeded random order, not class by class
    order = [int(np.flatnonzero((direct.x == x).all(axis=(1, 2, 3)))[0]) for x in got.x]
    assert sorted(order) == list(range(12)) and order != list(range(12))
    np.testing.assert_array_equal(got.y, direct.y[order])
    np.testing.assert_allclose(got.x, direct.x[order], atol=1e-6)
    # written once (used whole): the test split reads the train files
    assert not list((out / "night").glob("test*"))
    np.testing.assert_array_equal(ParquetDomains.read("night", "test", opts).y, got.y)
    lazy = ParquetDomains.read("night", "test", opts, lazy_images=True)
    assert lazy.x.shape == (12, 3, 16, 16) and len(lazy) == 12  # kept encoded
    np.testing.assert_allclose(lazy.x[np.array([3, 0, 7])], got.x[[3, 0, 7]], atol=1e-6)
    np.testing.assert_allclose(lazy.x.take(lazy.y == 1)[np.arange(6)], got.x[got.y == 1])
    import torch
    from shiftray.evaluate.metrics import evaluate
    from shiftray.evaluate.validators import unsupervised_scores
    from shiftray.models.build import build_model

    torch.manual_seed(0)
    net = build_model(spec_from_dict(synthetic_spec()).model.model_copy(update={"backbone": "lenet", "backbone_kwargs": {"channels": [4, 8]}}), (3, 16, 16), 2).eval()  # fmt: skip
    cpu = torch.device("cpu")
    assert evaluate(net, lazy, 5, cpu) == evaluate(net, got, 5, cpu)  # decoded per batch
    assert unsupervised_scores(net, lazy, 5, cpu) == unsupervised_scores(net, got, 5, cpu)
    red = got.x[got.y == 1][:, 0].mean()
    blue = got.x[got.y == 1][:, 2].mean()
    assert red > blue  # decoded the right images under the right labels

    spec = spec_from_dict(
        synthetic_spec(
            name="folders", data={"benchmark": "parquet", "source": "photo", "target": "night", "options": {"path": str(out)}},
            model={"backbone": "lenet", "bottleneck_dim": 8, "backbone_kwargs": {"channels": [4, 8]}},
            train__batch_size=8, train__steps=30, train__eval_every=30, train__checkpoint_every=30,
        )
    )  # fmt: skip
    result = train_loop_per_worker(LoopConfig(spec, tmp_path / "run", load_job_data(spec)))
    assert result["eval_count"] == 12


def test_csv_and_jsonl_tables(tmp_path):
    rows = [
        {"f1": float(i), "f2": float(i % 3), "label": i % 2, "domain": "a" if i < 10 else "b"}
        for i in range(16)
    ]
    rows[12]["label"] = None
    csv = tmp_path / "t.csv"
    csv.write_text("f1,f2,label,domain\n" + "\n".join(
        f"{r['f1']},{r['f2']},{'' if r['label'] is None else r['label']},{r['domain']}" for r in rows) + "\n")  # fmt: skip
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for path in (csv, jsonl):
        out = tmp_path / f"pq-{path.suffix[1:]}"
        assert main(["data", "prepare", "table", "-o", f"path={path}", "--out", str(out)]) == 0
        a = ParquetDomains.read("a", "test", ParquetDomains.Options(path=str(out)))
        assert a.x.shape == (10, 2) and a.y.tolist() == [i % 2 for i in range(10)]
        b = ParquetDomains.read("b", "test", ParquetDomains.Options(path=str(out)))
        assert b.x[:, 0].tolist() == [10, 11, 12, 13, 14, 15] and b.y[2] == -1


def test_table_edge_cases_fail_naming_what_to_fix(tmp_path):
    """JSON lines may write an unlabelled row's label as "" beside numbers; an empty feature
    cell, or a file with no numeric feature column, fails naming the columns."""
    from shiftray.data.readers.table import TableFile

    jsonl = tmp_path / "mixed.jsonl"
    rows = [{"f": float(i), "label": "" if i == 2 else i % 2, "domain": "a"} for i in range(100)]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = TableFile.read("a", "train", TableFile.Options(path=str(jsonl)))
    assert a.y[:4].tolist() == [0, 1, -1, 1] and a.x.shape == (100, 1)
    csv = tmp_path / "hole.csv"
    csv.write_text("f1,f2,label,domain\n1,2,0,a\n,3,1,a\n4,5,1,b\n")
    with pytest.raises(ValueError, match=r"1 row\(s\) of domain 'a' .*columns \['f1'\]"):
        TableFile.read("a", "train", TableFile.Options(path=str(csv)))
    assert TableFile.read("b", "train", TableFile.Options(path=str(csv))).x.tolist() == [[4, 5]]
    text = tmp_path / "text.csv"
    text.write_text("review,label,domain\ngood,1,a\nbad,0,a\n")
    with pytest.raises(ValueError, match="no numeric feature column .*feature_columns="):
        TableFile.read("a", "train", TableFile.Options(path=str(text)))


def test_table_reader_output_is_the_hand_built_matrix(tmp_path):
    """The columnar reader: feature columns in file order (or in `feature_columns` order),
    int and float columns as float32, class names sorted, empty and -1 labels unlabelled, each
    domain's rows in file order; a Parquet file read in several row groups gives the same."""
    import pyarrow as pa
    from shiftray.data.readers.table import TableFile, _parse

    csv = tmp_path / "t.csv"
    csv.write_text(
        "b,label,a,domain,n\n"
        "0.5,dog,1,x,7\n"
        "1.5,,2,y,8\n"
        "2.5,cat,3,x,9\n"
        "3.5,-1,4,x,10\n"
        "4.5,eel,5,y,11\n"
    )
    opts = TableFile.Options(path=str(csv))
    assert TableFile.domains(opts) == ["x", "y"]
    assert TableFile.class_names(opts) == ["cat", "dog", "eel"]
    x = TableFile.read("x", "train", opts)
    np.testing.assert_array_equal(
        x.x, np.array([[0.5, 1, 7], [2.5, 3, 9], [3.5, 4, 10]], np.float32)
    )
    assert x.x.dtype == np.float32 and x.y.tolist() == [1, 0, -1]
    y = TableFile.read("y", "test", opts)
    assert y.x.tolist() == [[1.5, 2, 8], [4.5, 5, 11]] and y.y.tolist() == [-1, 2]
    picked = TableFile.read(
        "x", "train", TableFile.Options(path=str(csv), feature_columns=["n", "b"])
    )
    assert picked.x.tolist() == [[7, 0.5], [9, 2.5], [10, 3.5]]
    with pytest.raises(ValueError, match=r"feature_columns \['z'\] are not columns"):
        TableFile.read("x", "train", TableFile.Options(path=str(csv), feature_columns=["z", "a"]))
    with pytest.raises(ValueError, match=r"feature columns \['domain'\] are not all numeric"):
        TableFile.read("x", "train", TableFile.Options(path=str(csv), feature_columns=["domain"]))

    pq_path = tmp_path / "t.parquet"
    pq.write_table(_parse.__wrapped__(str(csv), 0, 0).table, pq_path, row_group_size=2)
    assert len(pq.read_table(pq_path).to_batches()) == 3
    got = TableFile.read("x", "train", TableFile.Options(path=str(pq_path)))
    np.testing.assert_array_equal(got.x, x.x)
    assert got.y.tolist() == x.y.tolist()
    # the parsed file is shared by the calls, and re-read once the file changes
    csv.write_text("f,label,domain\n1,0,x\n")
    assert TableFile.read("x", "train", opts).x.tolist() == [[1.0]]
    assert pa.types.is_integer(_parse(str(csv.resolve()), *_stat(csv)).table.schema.field("f").type)


def _stat(path):
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def test_table_option_features_is_now_feature_columns(tmp_path, capsys):
    """`features` is a transform in other readers; the table reader's column list is
    `feature_columns`, and the old spelling is refused naming it."""
    from shiftray.data.readers.table import TableFile

    with pytest.raises(ValueError, match="`features` is now `feature_columns`"):
        TableFile.Options(path="t.csv", features=["f1"])
    csv = tmp_path / "t.csv"
    csv.write_text("f1,f2,label,domain\n1,2,0,a\n")
    args = ["data", "prepare", "table", "-o", f"path={csv}", "-o", "features=[f1]"]
    assert main([*args, "--out", str(tmp_path / "pq")]) == 2
    assert "`features` is now `feature_columns`" in capsys.readouterr().err
    args[-1] = "feature_columns=[f2]"
    assert main([*args, "--out", str(tmp_path / "pq")]) == 0
    assert ParquetDomains.read(
        "a", "test", ParquetDomains.Options(path=str(tmp_path / "pq"))
    ).x.tolist() == [[2.0]]
    # the transforms that shared these names have their own too
    from shiftray.data.readers.amazon import AmazonReviews
    from shiftray.data.readers.office import OfficeCaltech10

    with pytest.raises(ValueError, match="amazon option `features` is now `transform`"):
        AmazonReviews.Options(features="log1p")
    with pytest.raises(ValueError, match="`normalize` is now `domain_normalize`"):
        OfficeCaltech10.Options(normalize="zscore")
    assert AmazonReviews.Options(transform="binary").transform == "binary"


def test_a_folder_name_that_is_not_utf8_is_named(tmp_path):
    import os

    root = tmp_path / "tree"
    make_tree(root, n=1)
    try:
        os.mkdir(os.fsencode(root) + b"/caf\xe9")
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system refuses names that are not UTF-8")
    with pytest.raises(ValueError, match=r"b'caf\\xe9'.*'café' in Latin-1.*rename it"):
        ImageFolder.class_names(ImageFolder.Options(root=str(root)))


def test_image_folder_missing_root_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="root/<domain>/<class>"):
        ImageFolder.read("x", "train", ImageFolder.Options(root=str(tmp_path / "nope")))


def test_first_decode_in_a_fresh_process_imports_torchvision_before_its_threads():
    """CI once failed here: the pool threads each imported torchvision for the first time and
    raced on its circular submodules (a race: it passed locally). In a fresh interpreter the pool
    must find torchvision already imported when it starts; then 32 images decode on 8 threads."""
    import subprocess
    import sys

    code = (
        "import io, sys\n"
        "import numpy as np\n"
        "from PIL import Image\n"
        "import shiftray.data.images as images\n"
        "assert 'torchvision' not in sys.modules\n"
        "class Pool(images.ThreadPoolExecutor):\n"
        "    def __init__(self, *a, **k):\n"
        "        assert 'torchvision.io' in sys.modules, 'pool started before torchvision import'\n"
        "        assert 'torchvision.transforms.v2.functional' in sys.modules\n"
        "        super().__init__(*a, **k)\n"
        "images.ThreadPoolExecutor = Pool\n"
        "blobs = []\n"
        "for i in range(32):\n"
        "    b = io.BytesIO()\n"
        "    Image.fromarray(np.full((20, 20, 3), i, np.uint8)).save(b, format='PNG')\n"
        "    blobs.append(b.getvalue())\n"
        "x = images.decode_images(blobs, 16, threads=8)\n"
        "assert x.shape == (32, 3, 16, 16)\n"
        "assert abs(float(x[31].mean()) * 255 - 31) < 0.5\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_image_folder_edge_cases(tmp_path, capsys):
    """Hidden folders and files are not domains, classes or images; BMP and 16-bit PNG decode;
    a truncated JPEG fails the read naming the file, or is left out with on_bad_image=skip."""
    from PIL import Image

    root = tmp_path / "tree"
    make_tree(root, n=2)
    (root / ".cache" / "x").mkdir(parents=True)
    (root / "photo" / ".ipynb_checkpoints").mkdir()
    (root / "photo" / "red" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 apple double")
    Image.fromarray(np.full((20, 20, 3), (200, 10, 10), np.uint8)).save(root / "photo/red/b.bmp")
    grey16 = np.full((20, 20), 65535, np.uint16)
    Image.fromarray(grey16).save(root / "photo/blue/deep.png")
    opts = ImageFolder.Options(root=str(root), image_size=16)
    assert ImageFolder.domains(opts) == ["night", "photo"]
    assert ImageFolder.class_names(opts) == ["blue", "red"]
    photo = ImageFolder.read("photo", "test", opts)
    assert len(photo.y) == 6 and float(photo.x.max()) <= 1.0
    assert sum(np.allclose(x, 1.0) for x in photo.x[photo.y == 0]) == 1  # 16-bit white: 1.0
    assert sum(np.allclose(x[0], 200 / 255) for x in photo.x[photo.y == 1]) == 1  # the BMP
    bad = root / "night" / "red" / "cut.jpg"
    bad.write_bytes((root / "night" / "red" / "0.jpg").read_bytes()[:200])
    with pytest.raises(ValueError, match="on_bad_image=skip") as e:
        ImageFolder.read("night", "test", opts)
    assert str(bad) in str(e.value) and "1 of 5 files" in str(e.value)
    out = tmp_path / "pq"
    args = ["data", "prepare", "imagefolder", "-o", f"root={root}", "--out", str(out)]
    assert main(args) == 2 and str(bad) in capsys.readouterr().err
    assert main([*args, "-o", "on_bad_image=skip", "-o", "image_size=16"]) == 0
    assert len(ParquetDomains.read("night", "train", ParquetDomains.Options(path=str(out))).y) == 4
    assert (
        main(
            ["data", "prepare", "imagefolder", "-o", f"root={tmp_path / 'nope'}", "--out", str(out)]
        )
        == 2
    )
    assert "found no domains" in capsys.readouterr().err


def test_table_labels_names_unlabelled_rows_and_a_target_without_labels(tmp_path):
    """Class-name labels, -1 / empty for unlabelled rows, string integers compared as numbers,
    errors naming the file; a target with no labels at all trains and reports label-free
    scores instead of an accuracy."""
    from shiftray.data.readers.table import TableFile

    rng = np.random.default_rng(0)
    lines = ["x1,x2,label,domain"]
    for i in range(120):
        cls = i % 2
        dom = "lab" if i < 60 else "field"
        label = ("cat", "dog")[cls] if dom == "lab" else ""  # the field domain: no labels
        if dom == "lab" and i % 10 == 0:
            label = "-1"
        lines.append(f"{rng.normal(2 * cls, 0.3):.3f},{rng.normal(0, 1):.3f},{label},{dom}")
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    opts = TableFile.Options(path=str(path))
    assert TableFile.class_names(opts) == ["cat", "dog"]
    lab = TableFile.read("lab", "train", opts)
    assert (lab.y == -1).sum() == 6 and set(lab.y.tolist()) == {-1, 0, 1}
    assert TableFile.read("field", "test", opts).y is None
    spec = spec_from_dict(
        synthetic_spec(
            name="table", data={"benchmark": "table", "source": "lab", "target": "field", "options": {"path": str(path)}},
            model={"backbone": "mlp", "backbone_kwargs": {"hidden": [8]}, "bottleneck_dim": 0},
            train__steps=10, train__eval_every=10, train__checkpoint_every=10,
        )
    )  # fmt: skip
    data = load_job_data(spec)
    assert len(data.source) == 54 and data.target_test.y is None  # -1 rows dropped from source
    result = train_loop_per_worker(LoopConfig(spec, tmp_path / "run", data))
    assert "target_acc" not in result and 0 <= result["target_entropy"] <= np.log(2) + 1e-6

    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"x": i, "label": str(v), "domain": "a"}) + "\n"
            for i, v in enumerate([3, 10, 2])
        )
    )
    assert TableFile.class_names(TableFile.Options(path=str(jsonl))) == [str(i) for i in range(11)]
    with pytest.raises(ValueError, match=r"labels \[10\] are outside 0\.\.3"):
        TableFile.class_names(TableFile.Options(path=str(jsonl), classes=list("abcd")))
    with pytest.raises(ValueError, match=r"s\.jsonl: no column 'y'; its columns: x, label, domain"):
        TableFile.class_names(TableFile.Options(path=str(jsonl), label="y"))
    with pytest.raises(ValueError, match=r"labels \['dog'\] are not in classes \['cat'\]"):
        TableFile.class_names(TableFile.Options(path=str(path), classes=["cat"]))


@pytest.mark.parametrize(
    "labels, classes, names, ids",
    [
        ([" 1", "0", "2"], None, ["0", "1", "2"], [1, 0, 2]),  # spaces, as numbers
        (["1.0", "-1.00", "0"], None, ["0", "1"], [1, -1, 0]),  # float-written integers
        (["1.05", "10.05"], None, ["1.05", "10.05"], [0, 1]),  # not integers: names
        (["1", "2"], ["1", "2", "3"], ["1", "2", "3"], [0, 1]),  # numbers that are the names
        (["2", "0"], ["cat", "dog", "eel"], ["cat", "dog", "eel"], [2, 0]),  # indices, named
    ],
)
def test_table_label_values(tmp_path, labels, classes, names, ids):
    from shiftray.data.readers.table import TableFile

    path = tmp_path / "t.jsonl"
    path.write_text(
        "".join(json.dumps({"x": 0.0, "label": v, "domain": "a"}) + "\n" for v in labels)
    )
    opts = TableFile.Options(path=str(path), classes=classes)
    assert TableFile.class_names(opts) == names
    assert TableFile.read("a", "train", opts).y.tolist() == ids


def test_animated_gif_becomes_its_first_frame_and_one_encoded_row_decodes_alone():
    import io

    from PIL import Image
    from shiftray.data.images import EncodedImages, checked_bytes, decode_images

    frames = [Image.fromarray(np.full((20, 20, 3), v, np.uint8)) for v in (30, 220)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    fixed = checked_bytes(gif.getvalue())
    assert fixed is not None and fixed[:4] == b"\x89PNG"  # re-encoded, one frame
    x = decode_images([fixed], 16)
    assert x.shape == (1, 3, 16, 16) and abs(float(x.mean()) * 255 - 30) < 2
    assert EncodedImages([fixed, fixed], 16)[1].shape == (3, 16, 16)


def test_a_streamed_source_must_be_labelled_on_every_row(tmp_path):
    from shiftray.data.batches.stream import load_stream_data

    lines = ["x,label,domain"] + [
        f"{i},{'' if i == 3 else i % 2},{d}" for d in "ab" for i in range(40)
    ]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pq"
    assert main(["data", "prepare", "table", "-o", f"path={path}", "--out", str(out)]) == 0

    def spec(source, target):
        data = {"benchmark": "parquet", "source": source, "target": target,
                "options": {"path": str(out)}, "stream": {"enabled": True}}  # fmt: skip
        return spec_from_dict(synthetic_spec(data=data, train__batch_size=8))

    with pytest.raises(ValueError, match=r"data.source='a': .*a/train.parquet has unlabelled rows"):
        load_stream_data(spec("a", "b"))
    # written again with its unlabelled row left out, the source streams
    fixed = [ln for ln in lines if not ln.startswith("3,,")]
    path.write_text("\n".join(fixed) + "\n")
    assert main(["data", "prepare", "table", "-o", f"path={path}", "--out", str(out)]) == 0
    data, paths = load_stream_data(spec("a", "b"))
    assert data.stream.source_rows == 39
    # an empty shard (every image of a split skipped) has no statistics: labelled, zero rows
    write_shards([pq.read_table(paths["source"][0]).schema.empty_table()], out, "a", "train")
    assert load_stream_data(spec("a", "b"))[0].stream.source_rows == 0


def test_write_table_is_all_or_nothing(tmp_path, monkeypatch):
    """A prepare that fails part-way (disk full, a kill) leaves the previous files, not some
    of the new shards that would read back as a shorter domain."""
    import pyarrow as pa
    from shiftray.data.table import write_table

    def table(n):
        return pa.table({"input": pa.array([[float(i)] for i in range(n)], pa.list_(pa.float32())),
                         "label": pa.array(range(n), pa.int64())})  # fmt: skip

    write_table(table(100), tmp_path, "d", "train", 25)
    real, calls = pq.ParquetWriter.write_table, []

    def failing(self, t, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("No space left on device")
        return real(self, t, *a, **k)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    with pytest.raises(OSError, match="No space"):
        write_table(table(120), tmp_path, "d", "train", 25)
    monkeypatch.undo()
    files = shard_paths(tmp_path, "d", "train")
    assert [f.name for f in files] == [f"train-{i:05d}.parquet" for i in range(4)]
    assert sum(pq.read_table(f).num_rows for f in files) == 100
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [f.name for f in files]


def test_prepare_reads_a_chunk_at_a_time_and_a_failed_prepare_changes_nothing(tmp_path):
    root, out = tmp_path / "tree", tmp_path / "pq"
    make_tree(root, n=6)
    opts = ImageFolder.Options(root=str(root), image_size=16)
    chunks = list(ImageFolder.encoded_tables("photo", "train", opts, seed=0, chunk=5))
    assert [len(t) for t in chunks] == [5, 5, 2]  # one chunk of files in memory at a time
    args = [
        "data",
        "prepare",
        "imagefolder",
        "-o",
        f"root={root}",
        "--out",
        str(out),
        "--shard-rows",
        "4",
    ]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in (out / "night").iterdir()}
    assert sorted(before) == [f"train-{i:05d}.parquet" for i in range(3)]
    (root / "night" / "red" / "9.jpg").write_bytes(b"not an image")
    assert main(args) == 2  # the night domain fails its check: its old files stay as they were
    assert {p.name: p.read_bytes() for p in (out / "night").iterdir()} == before


def test_write_shards_rows_replacement_and_leftovers(tmp_path):
    import pyarrow as pa
    from shiftray.data.table import shard_paths, write_shards

    def t(n, start=0):
        return pa.table({"v": pa.array(range(start, start + n), pa.int64())})

    (tmp_path / "d").mkdir()
    for k in range(6):  # an earlier prepare with more shards, and a killed one's leftovers
        pq.write_table(t(1), tmp_path / "d" / f"train-{k:05d}.parquet")
    (tmp_path / "d" / ".train.writing-dead").mkdir()
    paths, rows = write_shards([t(3), t(7, 3), t(0), t(5, 10)], tmp_path, "d", "train", 4)
    assert rows == 15 and [pq.read_metadata(p).num_rows for p in paths] == [4, 4, 4, 3]
    assert shard_paths(tmp_path, "d", "train") == paths  # the 6 old shards: 4 replaced, 2 gone
    assert pa.concat_tables([pq.read_table(p) for p in paths])["v"].to_pylist() == list(range(15))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [p.name for p in paths]
    (paths, rows) = write_shards([t(0)], tmp_path, "d", "train", 4)  # nothing readable
    assert rows == 0 and len(paths) == 1 and pq.read_table(paths[0]).schema.names == ["v"]


def test_image_folders_reprepared_drop_an_earlier_test_split(tmp_path):
    root, out = tmp_path / "tree", tmp_path / "pq"
    make_tree(root, n=2)
    (out / "night").mkdir(parents=True)
    pq.write_table(_tiny(), out / "night" / "test.parquet")  # from an earlier prepare
    assert main(["data", "prepare", "imagefolder", "-o", f"root={root}", "--out", str(out)]) == 0
    assert not list((out / "night").glob("test*"))  # else it would be read as the test split
    assert len(ParquetDomains.read("night", "test", ParquetDomains.Options(path=str(out))).y) == 4


def _tiny():
    import pyarrow as pa

    return pa.table({"input": pa.array([b"x"]), "label": pa.array([0])})
