"""Few-shot (prototypical networks): prototypes and distances against a hand computation, the
episodes' sampling, the 95% interval, and `shiftray fewshot` on a trained run."""

import numpy as np
import pytest
import torch
from conftest import synthetic_spec
from shiftray.errors import UserInputError
from shiftray.evaluate.fewshot import episodes, evaluate, nearest, prototypes


def test_prototypes_and_nearest_by_hand():
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    protos = prototypes(support, torch.tensor([0, 0, 1, 1]), ways=2)
    assert protos.tolist() == [[1.0, 0.0], [11.0, 10.0]]  # the class means
    # q0 = (1, 1): d^2 = 1 to c0, 100 + 81 = 181 to c1; q1 = (9, 9): 64 + 81 = 145 and 4 + 1 = 5
    queries = torch.tensor([[1.0, 1.0], [9.0, 9.0]])
    assert nearest(queries, protos).tolist() == [0, 1]
    # a query nearer c1 than c0 along one axis but not in Euclidean distance still goes to c0
    assert nearest(torch.tensor([[6.9, 0.0]]), protos).tolist() == [0]  # 34.8 vs 116.6


def test_episodes_draw_disjoint_support_and_queries_from_distinct_classes():
    labels = np.repeat(np.arange(8), 20)
    labels[:15] = 9  # class 0 keeps 5 examples: too few for 2 shots + 5 queries
    seen = set()
    for s_idx, s_y, q_idx, q_y in episodes(labels, ways=4, shots=2, queries=5, n=50, seed=1):
        assert len(s_idx) == 8 and len(q_idx) == 20 and not set(s_idx) & set(q_idx)
        classes = [labels[s_idx[s_y == k]] for k in range(4)]
        assert all(len(set(c)) == 1 for c in classes)  # one original class per episode label
        assert len({int(c[0]) for c in classes}) == 4
        assert all(set(labels[q_idx[q_y == k]]) == {classes[k][0]} for k in range(4))
        seen |= {int(c[0]) for c in classes}
    assert 0 not in seen and seen <= {1, 2, 3, 4, 5, 6, 7, 9}
    with pytest.raises(UserInputError, match="needs 9 classes"):
        next(episodes(labels, ways=9, shots=2, queries=5, n=1))


def test_accuracy_and_its_interval():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    separable = np.eye(10)[labels] * 100 + rng.normal(0, 0.1, (300, 10))
    r = evaluate(separable, labels, ways=5, shots=1, n=100, queries=5)
    assert (r.accuracy, r.ci95) == (100.0, 0.0)
    noise = rng.normal(size=(300, 10))
    r = evaluate(noise, labels, ways=5, shots=1, n=400, queries=5)
    assert abs(r.accuracy - 20.0) < 3 * r.ci95  # chance, within the interval's reach
    accs = []  # the interval by hand, from the same episodes
    for s_idx, s_y, q_idx, q_y in episodes(labels, 5, 1, 5, 400, seed=0):
        protos = prototypes(torch.as_tensor(noise[s_idx]), torch.as_tensor(s_y), 5)
        accs.append(100 * float((nearest(torch.as_tensor(noise[q_idx]), protos).numpy() == q_y).mean()))
    assert r.accuracy == pytest.approx(np.mean(accs))
    assert r.ci95 == pytest.approx(1.96 * np.std(accs) / np.sqrt(400))


def test_fewshot_command_on_a_trained_run(tmp_path, capsys):
    from shiftray.cli import main
    from shiftray.config.load import spec_from_dict
    from shiftray.data.loading import load_job_data
    from shiftray.train.loop import train_loop_per_worker
    from shiftray.train.run import LoopConfig

    spec = spec_from_dict(synthetic_spec(method={"name": "erm"}, data__options={"n": 256, "dim": 8,
                                                                               "num_classes": 4}))  # fmt: skip
    train_loop_per_worker(LoopConfig(spec, tmp_path / "run", load_job_data(spec)))
    args = ["fewshot", str(tmp_path / "run"), "--domain", "b", "--ways", "3", "--shots", "1,5",
            "--episodes", "50", "--queries", "5"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3-way 1-shot" in out and "3-way 5-shot" in out and "256 test examples" in out
    assert main([*args[:3], "nowhere", *args[4:]]) == 2  # an unknown domain: a user's error


def test_episodic_finetuning_lowers_the_prototypical_loss_on_source_episodes(tmp_path, capsys):
    """The loss by hand on one episode, then: training on source episodes lowers it, and the
    command runs it before scoring the target domain's episodes."""
    import torch.nn.functional as F
    from shiftray.cli import main
    from shiftray.config.load import spec_from_dict
    from shiftray.data.loading import load_job_data
    from shiftray.evaluate.fewshot import episodes, episodic_finetune, prototypes
    from shiftray.models.load import load_trained_model
    from shiftray.train.loop import train_loop_per_worker
    from shiftray.train.run import LoopConfig

    spec = spec_from_dict(synthetic_spec(method={"name": "erm"}, train__steps=4, train__eval_every=4,
                                         train__checkpoint_every=4,
                                         data__options={"n": 256, "dim": 8, "num_classes": 6, "noise": 1.5}))  # fmt: skip
    data = load_job_data(spec)
    train_loop_per_worker(LoopConfig(spec, tmp_path / "run", data))
    model, _ = load_trained_model(tmp_path / "run")
    x, y = data.source.x, data.source.y
    s, s_y, q, q_y = next(episodes(y, 3, 2, 4, 1, seed=1))  # the first fine-tuning episode
    with torch.no_grad():
        f = model.train()(torch.as_tensor(x[np.concatenate([s, q])]))[1]
        c = prototypes(f[:6], torch.as_tensor(s_y), 3)
        d = ((f[6:, None, :] - c[None]) ** 2).sum(-1)  # squared distances, by hand
        by_hand = float(F.cross_entropy(-d, torch.as_tensor(q_y)))
    losses = episodic_finetune(model, x, y, ways=3, shots=2, steps=150, queries=4, lr=1e-3)
    assert losses[0] == pytest.approx(by_hand, rel=1e-4)
    assert np.mean(losses[-30:]) < 0.7 * np.mean(losses[:30])
    args = ["fewshot", str(tmp_path / "run"), "--domain", "b", "--ways", "3", "--shots", "1",
            "--episodes", "20", "--queries", "5", "--finetune", "10"]  # fmt: skip
    assert main(args) == 0
    assert "after 10 source episodes of episodic fine-tuning" in capsys.readouterr().out
