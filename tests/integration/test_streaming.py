"""Ray Data streaming of Parquet shards (data.stream.enabled): deterministic lockstep epochs,
exact resume, two workers in sync, encoded images decoded in the workers."""

import json
import shutil

import numpy as np
import pytest
from conftest import make_tree, synthetic_spec
from shiftray.config.load import spec_from_dict
from shiftray.data.readers.synthetic import Synthetic
from shiftray.data.table import to_table, write_table
from shiftray.train.checkpoint import list_checkpoints

pytestmark = pytest.mark.ray

N, DIM = 300, 16


@pytest.fixture(scope="module")
def ray_session():
    import ray
    from shiftray.train.launch import ensure_ray

    ensure_ray(num_cpus=4)  # Ray Data's read tasks need CPUs beside the 2 training workers'
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Synthetic domains a / b as Parquet shards of 64 rows, and the arrays they hold."""
    root = tmp_path_factory.mktemp("stream")
    opts = Synthetic.Options(n=N, dim=DIM)
    arrays = {}
    for domain in ("a", "b"):
        for split in ("train", "test"):
            a = Synthetic.read(domain, split, opts)
            arrays[domain, split] = a
            write_table(to_table(a, Synthetic.class_names(opts)), root, domain, split, 64)
    return root, arrays


def stream_spec(root, tmp_path, **over):
    return spec_from_dict(
        synthetic_spec(
            name="stream",
            data={"benchmark": "parquet", "source": "a", "target": "b", "options": {"path": str(root)},
                  "stream": {"enabled": True, "shuffle_buffer": 64, "prefetch_batches": 1}},
            tracking={"wandb": "disabled", "output_dir": str(tmp_path)},
            **over,
        )
    )  # fmt: skip


_OPEN: list = []


@pytest.fixture(autouse=True)
def _close_pairings():
    """Close every stream a test opened while Ray is still up (no teardown noise)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def pairing(spec, batch=32):
    from shiftray.data.batches.stream import StreamPairing, load_stream_data, make_datasets

    data, paths = load_stream_data(spec)
    ds = make_datasets(paths)
    info = data.stream
    its = {k: v.iterator() for k, v in ds.items()}
    st = spec.data.stream
    p = StreamPairing(its, info, batch, 0, 0, 1, st.shuffle_buffer, st.prefetch_batches)
    _OPEN.append(p)
    return p


def test_stream_batches_are_a_pure_function_of_the_step(ray_session, shards, tmp_path):
    root, arrays = shards
    spec = stream_spec(root, tmp_path)
    first = pairing(spec)
    assert first.tgt.batches_per_epoch == N // 32 == 9
    seq = [first.batch(s) for s in range(12)]  # crosses into the second epoch
    again = pairing(spec)
    for s in range(12):
        b = again.batch(s)
        assert np.array_equal(b.x_t.numpy(), seq[s].x_t.numpy())
        assert np.array_equal(b.y_s.numpy(), seq[s].y_s.numpy())
    resumed = pairing(spec)  # a resumed run jumps straight to step 7
    for s in (7, 8, 9, 10):
        assert np.array_equal(resumed.batch(s).x_s.numpy(), seq[s].x_s.numpy())
    # labels travel with their inputs; target labels never reach the batch
    src = arrays["a", "train"]
    for b in seq[:3]:
        rows = [int(np.flatnonzero((src.x == x).all(axis=1))[0]) for x in b.x_s.numpy()]
        assert np.array_equal(src.y[rows], b.y_s.numpy())
    assert all(b.idx_t is None for b in seq)
    # epoch 0 covers distinct rows; epoch 1 reshuffles them
    epoch0 = np.concatenate([b.x_t.numpy() for b in seq[:9]])
    assert len(np.unique(epoch0, axis=0)) == 9 * 32
    assert not np.array_equal(seq[9].x_t.numpy(), seq[0].x_t.numpy())


def test_streamed_run_resumes_exactly(ray_session, shards, tmp_path):
    from shiftray.train.launch import fit_local

    root, _ = shards
    over = dict(train__steps=30, train__eval_every=15, train__checkpoint_every=15)
    full = fit_local(stream_spec(root, tmp_path / "full", **over))
    assert full.metrics["eval_count"] == N
    # the same run stopped after step 15: drop the later checkpoint, rerun on the directory
    cut = tmp_path / "cut" / "stream"
    shutil.copytree(full.run_dir, cut)
    shutil.rmtree(list_checkpoints(cut)[-1])
    (cut / "result.json").unlink()
    resumed = fit_local(stream_spec(root, tmp_path / "cut", **over))
    assert resumed.metrics["resumed_from"] == 15
    assert abs(resumed.metrics["target_loss"] - full.metrics["target_loss"]) < 1e-6
    assert resumed.metrics["target_acc"] == full.metrics["target_acc"]


def test_two_streaming_workers_stay_in_lockstep(ray_session, shards, tmp_path):
    from shiftray.train.launch import fit

    root, _ = shards
    spec = stream_spec(
        root, tmp_path, resources={"num_workers": 2}, train__steps=24, train__eval_every=12,
        train__checkpoint_every=12, train__batch_size=32,
    )  # fmt: skip
    from shiftray.train.hooks import ParamDigests

    result = fit(spec, hooks=(ParamDigests(),))
    digests = [json.loads((result.run_dir / f"params_rank{r}.json").read_text()) for r in (0, 1)]
    assert digests[0] == digests[1]
    assert result.metrics["step"] == 24 and result.metrics["eval_count"] == N
    # 300 rows / 2 workers / 16 per batch = 9 batches an epoch: 24 steps crossed two epochs


def test_streaming_needs_parquet_and_whole_target_methods_refuse(shards, tmp_path):
    root, _ = shards
    with pytest.raises(ValueError, match="data.stream.enabled streams Parquet shards"):
        spec_from_dict(synthetic_spec(data__stream={"enabled": True}))
    with pytest.raises(ValueError, match="'shot' keeps per-example state"):
        stream_spec(root, tmp_path, method={"name": "shot", "params": {}})


def test_encoded_images_are_decoded_in_the_worker(ray_session, tmp_path):
    from shiftray.cli import main
    from shiftray.data.readers.parquet import ParquetDomains
    from shiftray.train.launch import fit_local

    make_tree(tmp_path / "tree", n=8)
    out = tmp_path / "pq"
    assert main(["data", "prepare", "imagefolder", "-o", f"root={tmp_path / 'tree'}",
                 "-o", "image_size=16", "--out", str(out), "--shard-rows", "5"]) == 0  # fmt: skip
    spec = spec_from_dict(
        synthetic_spec(
            name="enc", tracking={"wandb": "disabled", "output_dir": str(tmp_path)},
            data={"benchmark": "parquet", "source": "photo", "target": "night",
                  "options": {"path": str(out)}, "stream": {"enabled": True, "shuffle_buffer": 0}},
            model={"backbone": "lenet", "bottleneck_dim": 8, "backbone_kwargs": {"channels": [4, 8]}},
            train__batch_size=8, train__steps=6, train__eval_every=6, train__checkpoint_every=6,
        )
    )  # fmt: skip
    p = pairing(spec, batch=8)
    b = p.batch(0)  # shuffle_buffer 0: the first 8 rows in file order
    memory = ParquetDomains.read("photo", "train", ParquetDomains.Options(path=str(out)))
    assert b.x_s.shape == (8, 3, 16, 16)
    np.testing.assert_allclose(b.x_s.numpy(), memory.x[:8], atol=1e-6)
    np.testing.assert_array_equal(b.y_s.numpy(), memory.y[:8])
    from shiftray.data.batches.stream import load_stream_data
    from shiftray.data.images import EncodedImages

    test = load_stream_data(spec)[0].target_test
    assert isinstance(test.x, EncodedImages)  # evaluation decodes a batch at a time
    eager = ParquetDomains.read("night", "test", ParquetDomains.Options(path=str(out)))
    np.testing.assert_allclose(test.x[np.arange(16)], eager.x, atol=1e-6)
    assert fit_local(spec).metrics["eval_count"] == 16


def test_ranks_stopping_early_close_without_waiting_on_each_other(ray_session, shards):
    """Both ranks stop after step 1 with reads queued into the next epoch; rank 1 reads slowly.
    Ray Data's split barrier holds a rank's new epoch until every rank opens it, so a rank that
    cancelled its queued reads on close left the other waiting there for ever."""
    import threading
    import time

    import ray.data
    from shiftray.data.batches.stream import StreamInfo, StreamPairing
    from shiftray.data.table import shard_paths

    root, _ = shards
    paths = [str(p) for p in shard_paths(root, "b", "train")][:2]  # 128 rows
    ds = ray.data.read_parquet(paths, columns=["input", "label"], shuffle=None)
    ds.context.execution_options.preserve_order = True
    its = ds.streaming_split(2, equal=True)
    info = StreamInfo(0, 128, (DIM,), encoded=False)  # 64 rows per rank, batch 16: 4 per epoch
    closed: dict[int, float] = {}

    def rank(r):
        p = StreamPairing({"target": its[r]}, info, 16, 0, r, 2, 0, 1, read_ahead=8)
        if r == 1:
            read = p._inputs
            p._inputs = lambda t: (time.sleep(0.3), read(t))[1]
        p.batch(0), p.batch(1)  # then an early stop, decided alike on every rank
        time.sleep(0.5)  # the evaluation before it: rank 0 reads on into the next epoch
        t = time.perf_counter()
        p.close()
        closed[r] = time.perf_counter() - t

    threads = [threading.Thread(target=rank, args=(r,), daemon=True) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(closed) == [0, 1], f"close() still waiting on rank(s) { ({0, 1} - set(closed)) }"


def _without_label_column(root, domain):
    """The domain's training shards rewritten with no label column at all: a trap that fails
    any read of a target label (Ray Data / pyarrow raise on a missing column)."""
    import pyarrow.parquet as pq
    from shiftray.data.table import shard_paths

    for path in shard_paths(root, domain, "train"):
        table = pq.read_table(path)
        pq.write_table(table.drop(["label"]), path)


def test_streamed_training_never_reads_a_target_label(ray_session, shards, tmp_path):
    from shiftray.train.launch import fit_local

    root, _ = shards
    trapped = tmp_path / "trapped"
    shutil.copytree(root, trapped)
    _without_label_column(trapped, "b")
    over = dict(train__steps=12, train__eval_every=12, train__checkpoint_every=12)
    spec = stream_spec(trapped, tmp_path, method={"name": "self_training"}, **over)
    result = fit_local(spec)
    assert result.metrics["step"] == 12 and result.metrics["eval_count"] == N  # test labels only


def test_shiftray_run_on_a_streamed_job_never_decodes_the_training_tables(
    ray_session, shards, tmp_path, monkeypatch
):
    """The CLI path (`shiftray run --no-ray`): the driver reads the shards' footers and the
    target test split, never a training split; the workers stream those."""
    import yaml
    from shiftray import cli
    from shiftray.data.readers import parquet as sources

    root, _ = shards
    decoded = []
    real = sources.decode_table

    def spy(table, lazy_images=False):
        decoded.append((table.column("domain")[0].as_py(), table.column("split")[0].as_py()))
        return real(table, lazy_images)

    monkeypatch.setattr(sources, "decode_table", spy)
    job = tmp_path / "job.yaml"
    spec = stream_spec(
        root, tmp_path, train__steps=6, train__eval_every=6, train__checkpoint_every=6
    )
    job.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    assert cli.main(["run", str(job), "--no-ray", "--restart"]) == 0
    assert decoded == [("b", "test")]
    assert json.loads((tmp_path / "stream" / "result.json").read_text())["eval_count"] == N
