import numpy as np
from shiftray.data.formats import DomainArrays
from shiftray.data.pairing import DomainStream, Pairing


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
    assert pairing.target.y is None  # ...dropped at the pairing layer
    batch = pairing.batch(3)
    assert set(vars(batch)) == {"x_s", "y_s", "x_t", "x_t_strong", "idx_t"}
    assert batch.x_t.shape == (8, 3) and float(batch.x_t.min()) == 1.0
