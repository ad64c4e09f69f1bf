import numpy as np
import pytest
from shiftray.data.arrays import DomainArrays
from shiftray.data.batches.memory import DomainStream, Pairing


def test_stream_is_a_pure_function_of_step():
    s = DomainStream(100, 8, seed=3)
    np.testing.assert_array_equal(s.indices(17), DomainStream(100, 8, seed=3).indices(17))
    epoch0 = np.concatenate([s.indices(k) for k in range(s.batches_per_epoch)])
    assert len(set(epoch0.tolist())) == len(epoch0) == 96  # no repeats inside an epoch
    assert not np.array_equal(s.indices(0), s.indices(s.batches_per_epoch))  # new epoch, new order


def test_worker_shards_are_disjoint_and_equal():
    shards = [DomainStream(101, 5, seed=0, rank=r, world=2) for r in range(2)]
    a = np.concatenate([shards[0].indices(k) for k in range(shards[0].batches_per_epoch)])
    b = np.concatenate([shards[1].indices(k) for k in range(shards[1].batches_per_epoch)])
    assert not set(a.tolist()) & set(b.tolist())
    assert len(a) == len(b) == 50


def test_target_labels_never_reach_the_batch():
    x = np.zeros((40, 3), np.float32)
    src = DomainArrays(x, np.arange(40) % 2, "s")
    tgt = DomainArrays(x + 1, np.full(40, 7), "t")  # labelled target on disk...
    pairing = Pairing(src, tgt, 8, seed=0)
    assert not hasattr(pairing.target, "y")  # ...dropped at the pairing layer: no label slot
    batch = pairing.batch(3)
    assert set(vars(batch)) == {"x_s", "y_s", "x_t", "x_t_strong", "idx_t", "x_l", "y_l", "y_aux"}
    assert batch.x_l is None and batch.y_l is None and batch.y_aux is None  # only when asked for
    assert batch.x_t.shape == (8, 3) and float(batch.x_t.min()) == 1.0


class _Shard:
    """A stand-in for a Ray Data shard: float rows in order, recording which thread reads."""

    def __init__(self, n, offset):
        import pyarrow as pa

        x = np.arange(offset, offset + n, dtype=np.float32)[:, None].repeat(2, 1)
        self.table = pa.table({"input": pa.array(list(x), pa.list_(pa.float32())),
                               "label": pa.array(np.arange(n) % 3)})  # fmt: skip
        self.threads = []

    def iter_batches(self, batch_size, batch_format, prefetch_batches):
        import threading

        for i in range(0, len(self.table), batch_size):
            self.threads.append(threading.current_thread().name)
            yield self.table.slice(i, batch_size)


def test_streamed_steps_are_read_ahead_on_a_reader_thread_in_order():
    import torch
    from shiftray.data.batches.stream import StreamInfo, StreamPairing

    def make(steps=None, depth=3):
        shards = {"source": _Shard(40, 0), "target": _Shard(24, 1000)}
        info = StreamInfo(40, 24, (2,), encoded=False)
        pairing = StreamPairing(shards, info, 4, 0, 0, 1, 0, 1, steps=steps, read_ahead=depth)
        return shards, pairing  # shuffle_buffer 0: file order

    shards, p = make(steps=9)
    got = [p.batch(0)]
    for pending in p._ahead.values():
        pending.result()
    assert len(shards["source"].threads) == 4  # steps 1-3 read while step 0 trains
    got += [p.batch(s) for s in range(1, 9)]
    p.close()
    assert len(shards["source"].threads) == len(shards["target"].threads) == 9  # not step 9
    assert {t for s in shards.values() for t in s.threads} == {"shiftray-stream_0"}
    # the same batches as read on the caller's thread, one step at a time, after a jump too
    for s in (0, 1, 2, 5, 6, 8, 3):
        _, q = make(depth=0)
        want = q.batch(s)
        q.close()
        assert torch.equal(got[s].x_s, want.x_s) and torch.equal(got[s].x_t, want.x_t)
        assert torch.equal(got[s].y_s, want.y_s)
    assert torch.equal(got[6].x_t, got[0].x_t)  # 24 target rows: step 6 starts epoch 1
    assert got[6].x_s[0, 0] == 24  # the 40 source rows go on
    _, r = make(depth=1)
    jumped = [r.batch(s) for s in (4, 2, 3)]
    r.close()
    assert torch.equal(jumped[0].x_s, got[4].x_s) and torch.equal(jumped[2].x_t, got[3].x_t)


def test_read_ahead_jumps_errors_and_close():
    import torch
    from shiftray.data.batches.stream import StreamInfo, StreamPairing

    class Failing(_Shard):
        def iter_batches(self, batch_size, batch_format, prefetch_batches):
            for i, t in enumerate(super().iter_batches(batch_size, batch_format, prefetch_batches)):
                if i == 5:
                    raise OSError("shard unreadable")
                yield t

    def make(target, depth=3):
        info = StreamInfo(0, 40, (2,), encoded=False)
        return StreamPairing({"target": target}, info, 4, 0, 0, 1, 0, 1, read_ahead=depth)

    ref = make(_Shard(40, 0), depth=0)
    want = [ref.batch(s).x_t for s in range(6)]
    p = make(_Shard(40, 0))
    assert torch.equal(p.batch(0).x_t, want[0])
    assert torch.equal(p.batch(2).x_t, want[2])  # forward inside the queue: step 1 dropped
    assert torch.equal(p.batch(5).x_t, want[5])  # past the queue
    p.close()
    q = make(Failing(40, 0))
    for s in range(5):  # the failing read (step 5) is queued already; it surfaces at step 5
        assert torch.equal(q.batch(s).x_t, want[s])
    with pytest.raises(OSError, match="shard unreadable"):
        q.batch(5)
    q.close()  # nothing left running
    assert not q._ahead and q._reader._shutdown


def test_the_gpu_reader_thread_gets_a_numbered_device(monkeypatch):
    """Without Ray a GPU worker's device is plain "cuda"; torch.cuda.set_device, the reader
    thread's initializer, refuses a device without an index (the pool then broke at the first
    batch). The current device's number is filled in."""
    import torch
    from shiftray.data.batches.stream import StreamInfo, StreamPairing

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    info = StreamInfo(0, 64, (2,), encoded=False)
    p = StreamPairing({"target": object()}, info, 16, 0, 0, 1, 0, 1, decode_device="cuda")
    assert p.device == torch.device("cuda", 3)
    p.close()  # no read was queued: nothing to wait for
