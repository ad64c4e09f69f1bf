import json

import numpy as np
import pytest
from shiftray.config.load import spec_from_dict
from shiftray.data.files import DataNotFoundError
from shiftray.data.loading import load_domain_data
from shiftray.data.readers.amazon import AmazonReviews
from shiftray.data.readers.digits import Digits
from shiftray.data.readers.office import OfficeCaltech10
from shiftray.data.readers.synthetic import Synthetic
from shiftray.data.table import from_table, to_table


def test_table_roundtrip_keeps_shape_labels_and_nulls():
    arrays = Synthetic.read("a", "train", Synthetic.Options(n=20, dim=9, image=True))
    table = to_table(arrays, ["c0", "c1", "c2"])
    assert table.schema.field("label").nullable
    back = from_table(table)
    np.testing.assert_array_equal(back.x, arrays.x)
    np.testing.assert_array_equal(back.y, arrays.y)
    assert back.x.shape == (20, 1, 3, 3)
    assert from_table(to_table(arrays.without_labels(), ["c0"])).y is None


def test_large_inputs_are_chunked_below_the_list_offset_limit(tmp_path, monkeypatch):
    """A list<float32> chunk addresses at most 2**31 - 1 values (int32 offsets): 60,000 RGB
    digits at 224 px are 9e9. The limit lowered to 50 values here: 9 values a row, 5 a chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from shiftray.data import table as formats

    monkeypatch.setattr(formats, "MAX_LIST_VALUES", 50)
    arrays = Synthetic.read("a", "train", Synthetic.Options(n=23, dim=9))
    table = to_table(arrays, ["c0", "c1", "c2"])
    assert [len(c) for c in table.column("input").chunks] == [5, 5, 5, 5, 3]
    pq.write_table(table, tmp_path / "t.parquet")
    for t in (table, pq.read_table(tmp_path / "t.parquet")):
        back = from_table(t)
        np.testing.assert_array_equal(back.x, arrays.x)
        np.testing.assert_array_equal(back.y, arrays.y)
    # partly unlabelled: nulls come back as -1 in an int64 array (not NaN in a float one)
    table = table.set_column(1, "label", pa.array([None, *arrays.y[1:]], pa.int64()))
    y = from_table(table).y
    assert y.dtype == np.int64 and y[0] == -1 and (y[1:] == arrays.y[1:]).all()


def test_parquet_prepare_and_read_back(tmp_path):
    from shiftray.cli import main
    from shiftray.data.readers.parquet import ParquetDomains

    assert main(["data", "prepare", "synthetic", "--out", str(tmp_path), "-o", "n=50"]) == 0
    opts = ParquetDomains.Options(path=str(tmp_path))
    assert ParquetDomains.domains(opts) == ["a", "b"]
    got = ParquetDomains.read("b", "test", opts)
    want = Synthetic.read("b", "test", Synthetic.Options(n=50))
    np.testing.assert_allclose(got.x, want.x)
    spec = spec_from_dict(
        {
            "name": "p",
            "data": {
                "benchmark": "parquet",
                "source": "a",
                "target": "b",
                "options": {"path": str(tmp_path)},
            },
        }
    )
    assert not hasattr(load_domain_data(spec.data).target, "y")  # no label slot at all


def test_missing_data_names_files_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIFTRAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SHIFTRAY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SHIFTRAY_OFFLINE", "1")
    with pytest.raises(DataNotFoundError) as e:
        Digits.read("usps", "train", Digits.Options())
    msg = str(e.value)
    assert "usps/usps.h5" in msg and "SHIFTRAY_DATA_DIR" in msg and str(tmp_path) in msg
    assert "https://" in msg and "sha256" in msg


def test_digits_real(real_data):
    opts = Digits.Options()
    mnist = Digits.read("mnist", "test", opts)
    assert mnist.x.shape == (10000, 1, 28, 28) and mnist.x.min() >= 0 and mnist.x.max() <= 1
    assert np.bincount(mnist.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    usps = Digits.read("usps", "train", opts)
    assert usps.x.shape == (7291, 1, 28, 28)
    assert np.bincount(usps.y)[:3].tolist() == [1194, 1005, 731]
    h5_test = Digits.read("usps", "test", Digits.Options(image_size=16))
    lib_test = Digits.read("usps", "test", Digits.Options(image_size=16, usps_format="libsvm"))
    np.testing.assert_array_equal(h5_test.y, lib_test.y)  # same samples, same order
    corr = [
        np.corrcoef(a.ravel(), b.ravel())[0, 1]
        for a, b in zip(h5_test.x[:50], lib_test.x[:50], strict=True)
    ]
    assert np.median(corr) > 0.9


def test_amazon_and_office_real(real_data):
    books = AmazonReviews.read("books", "train", AmazonReviews.Options(transform="counts"))
    assert books.x.shape == (2000, 5000) and np.bincount(books.y).tolist() == [1000, 1000]
    assert int((books.x > 0).sum()) == 184408  # nnz published with the files
    kitchen = AmazonReviews.read("kitchen", "test", AmazonReviews.Options())
    assert len(kitchen) == 5945
    dslr = OfficeCaltech10.read("dslr", "train", OfficeCaltech10.Options())
    assert dslr.x.shape == (157, 800)
    assert np.bincount(dslr.y).tolist() == [12, 21, 12, 13, 10, 24, 22, 12, 8, 23]
    np.testing.assert_allclose(dslr.x.mean(0), 0, atol=1e-5)


def test_download_is_checked_before_use(tmp_path, monkeypatch):
    """A loopback HTTP server plays the original host: a good file lands, a bad one never does."""
    import hashlib
    import http.server
    import threading
    from functools import partial

    from shiftray.data.files import RemoteFile, find_files

    served = tmp_path / "served"
    served.mkdir()
    (served / "f.bin").write_bytes(b"real benchmark bytes")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/f.bin"
    monkeypatch.setenv("SHIFTRAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SHIFTRAY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SHIFTRAY_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("shiftray.data.files.RETRIES", 0)  # no back-off sleeps here
    try:
        bad = RemoteFile("x/bad.bin", url, "0" * 64)
        with pytest.raises(DataNotFoundError, match="checksum mismatch"):
            find_files("t", [bad])
        assert not (tmp_path / "cache" / "x" / "bad.bin").exists()
        good = RemoteFile("x/good.bin", url, hashlib.sha256(b"real benchmark bytes").hexdigest())
        (path,) = find_files("t", [good])
        assert (
            path == tmp_path / "cache" / "x" / "good.bin"
            and path.read_bytes() == b"real benchmark bytes"
        )
        by_md5 = RemoteFile("x/md5.bin", url, md5=hashlib.md5(b"real benchmark bytes").hexdigest())
        assert find_files("t", [by_md5])[0].read_bytes() == b"real benchmark bytes"
        gone = RemoteFile("x/gone.bin", url.replace("f.bin", "gone.bin"), "0" * 64)
        with pytest.raises(DataNotFoundError, match=r"download failed: 404 .*gone\.bin"):
            find_files("t", [gone])
        assert sorted(p.name for p in (tmp_path / "cache" / "x").iterdir()) == [
            "good.bin",
            "md5.bin",
        ]
    finally:
        server.shutdown()


def test_readers_declare_their_input_contract():
    """A reader says what one input is (`Benchmark.input_contract`); a text backbone makes it
    a text contract with its tokenizer (`job_input_contract`): no one tests a benchmark name."""
    from shiftray.data.readers.base import InputContract, job_input_contract
    from shiftray.data.readers.drugreview import DrugReviews
    from shiftray.data.readers.imagefolder import ImageFolder
    from shiftray.data.readers.table import TableFile

    def of(bench, shape, **options):
        return bench.input_contract(bench.Options.model_construct(**options), shape)

    assert of(Digits, (1, 28, 28)) == InputContract("image", (1, 28, 28), "stretch", range=(0, 1))
    assert of(ImageFolder, (3, 64, 64)) == InputContract("image", (3, 64, 64), "fit", range=(0, 1))
    assert of(Synthetic, (1, 3, 3)).range is None and of(Synthetic, (8,)).kind == "vector"
    assert of(AmazonReviews, (5000,), transform="binary").range == (0.0, 1.0)
    assert of(AmazonReviews, (5000,), transform="log1p").range == (0.0, None)
    assert of(OfficeCaltech10, (800,), domain_normalize="zscore").range is None
    assert of(TableFile, (16,), text="review").kind == "text"
    assert of(TableFile, (16,), text=None).kind == "vector"
    assert of(DrugReviews, (128,)) == InputContract("text", (128,), dtype="int64")
    text = job_input_contract("parquet", {"path": "x"}, "hf/some/bert", [32])  # token ids
    assert (text.kind, text.dtype, text.tokenizer, text.range) == (
        "text",
        "int64",
        "some/bert",
        None,
    )
    back = InputContract.from_json(json.loads(json.dumps(of(AmazonReviews, (9,)).to_json())))
    assert back == of(AmazonReviews, (9,))


def test_training_writes_the_input_contract_into_labels_json(tmp_path):
    from conftest import synthetic_spec
    from shiftray.data.loading import load_job_data
    from shiftray.train.loop import train_loop_per_worker
    from shiftray.train.run import LoopConfig

    over = {"train__steps": 2, "train__checkpoint_every": 2, "train__eval_every": 2}
    spec = spec_from_dict(synthetic_spec(data__options={"n": 64, "dim": 8}, **over))
    train_loop_per_worker(LoopConfig(spec, tmp_path / "run", load_job_data(spec)))
    written = sorted((tmp_path / "run").glob("**/labels.json"))  # the run's, its checkpoint's
    assert len(written) == 2
    for labels_json in written:
        labels = json.loads(labels_json.read_text())
        assert labels["input"] == {"kind": "vector", "shape": [8], "resize": "none",
                                   "dtype": "float32", "tokenizer": "", "range": None}  # fmt: skip
