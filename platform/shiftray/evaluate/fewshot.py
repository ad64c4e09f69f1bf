"""Few-shot classification with prototypical networks (Snell et al., NeurIPS 2017) on a trained
model's features: N-way K-shot episodes over a labelled domain.

    shiftray fewshot RUN_DIR --domain usps --ways 5 --shots 1,5 --episodes 600

An episode draws N classes (among those with at least K + Q examples), K support and Q query
examples of each, without replacement. With f the model's feature map (the features its
classifier reads), each class's prototype is the mean of its support features,

    c_k = (1/K) sum_{x in S_k} f(x),

and a query x is assigned the nearest prototype in squared Euclidean distance,
argmin_k ||f(x) - c_k||^2 (the softmax over -d is the paper's p(y = k | x); its argmax is the
same). The accuracy is over the N * Q queries of an episode; the report is the mean over
episodes with its 95% confidence interval, 1.96 * std / sqrt(episodes), as Snell et al. and
later few-shot work report it. The trained classifier head is not used: the classes of an
episode need not be the classes the model was trained on.

Episodic fine-tuning (``--finetune STEPS``) first trains the feature map the way ProtoNets are
trained: on N-way K-shot episodes of the run's labelled *source* training split, minimising

    L = -log softmax_k(-||f(q) - c_k||^2)[y_q]   over the episode's queries,

with Adam, every layer of f trainable; the target domain's episodes are then classified by the
fine-tuned f. The target's labels never reach the fine-tuning.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shiftray.errors import UserInputError


@dataclass(frozen=True)
class FewShotResult:
    ways: int
    shots: int
    queries: int
    episodes: int
    accuracy: float  # percent, mean over episodes
    ci95: float  # percent, half-width of the 95% confidence interval of the mean


def prototypes(support: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """(ways, D): the mean feature of each class's support examples (labels 0..ways-1)."""
    protos = torch.zeros(ways, support.shape[1], dtype=support.dtype)
    protos.index_add_(0, labels, support)
    return protos / torch.bincount(labels, minlength=ways).unsqueeze(1).to(support.dtype)


def nearest(queries: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Each query's nearest prototype in squared Euclidean distance."""
    return torch.cdist(queries, protos).argmin(dim=1)


def episodes(labels: np.ndarray, ways: int, shots: int, queries: int, n: int,
             seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    """``n`` episodes: (support indices, their episode labels, query indices, their labels)."""
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    eligible = sorted(c for c, idx in by_class.items() if len(idx) >= shots + queries)
    if len(eligible) < ways:
        raise UserInputError(f"{ways}-way {shots}-shot with {queries} queries needs {ways} classes "
                             f"of at least {shots + queries} examples; the data has {len(eligible)}")  # fmt: skip
    rng = np.random.default_rng(seed)
    for _ in range(n):
        classes = rng.choice(eligible, size=ways, replace=False)
        s_idx, q_idx = [], []
        for c in classes:
            picked = rng.choice(by_class[c], size=shots + queries, replace=False)
            s_idx.append(picked[:shots])
            q_idx.append(picked[shots:])
        yield (np.concatenate(s_idx), np.repeat(np.arange(ways), shots),
               np.concatenate(q_idx), np.repeat(np.arange(ways), queries))  # fmt: skip


def evaluate(features: np.ndarray, labels: np.ndarray, ways: int, shots: int, n: int = 600,
             queries: int = 15, seed: int = 0) -> FewShotResult:  # fmt: skip
    """ProtoNet accuracy over ``n`` episodes of precomputed ``features`` (N, D)."""
    feats = torch.as_tensor(features, dtype=torch.float64)
    accs = []
    for s_idx, s_y, q_idx, q_y in episodes(labels, ways, shots, queries, n, seed):
        protos = prototypes(feats[s_idx], torch.as_tensor(s_y), ways)
        accs.append(float((nearest(feats[q_idx], protos).numpy() == q_y).mean()))
    a = np.asarray(accs) * 100
    return FewShotResult(ways, shots, queries, n, float(a.mean()), float(1.96 * a.std() / np.sqrt(n)))


def episodic_finetune(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, ways: int, shots: int,
                      steps: int, queries: int = 15, lr: float = 1e-4, seed: int = 0) -> list[float]:  # fmt: skip
    """Train ``model``'s feature map on ``steps`` episodes of (x, y) with the prototypical
    loss (module docstring); returns the episode losses."""
    import torch.nn.functional as F

    torch.manual_seed(seed)  # dropout masks: the same fine-tuning for the same seed
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    losses = []
    for s_idx, s_y, q_idx, q_y in episodes(y, ways, shots, queries, steps, seed + 1):
        feats = model(torch.as_tensor(np.asarray(x[np.concatenate([s_idx, q_idx])])))[1].float()
        protos = prototypes(feats[: len(s_idx)], torch.as_tensor(s_y), ways)
        loss = F.cross_entropy(-torch.cdist(feats[len(s_idx) :], protos) ** 2, torch.as_tensor(q_y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _domain_data(run_dir, domain: str, benchmark: str | None, with_source: bool):
    from shiftray.config.load import load_raw, spec_from_dict
    from shiftray.data.loading import load_domain_data
    from shiftray.models.load import resolve_checkpoint

    raw = load_raw(resolve_checkpoint(run_dir) / "spec.yaml")
    raw["data"] |= {"target": domain} | ({"benchmark": benchmark} if benchmark else {})
    data = spec_from_dict(raw, f"{run_dir} with data.target={domain}").data  # domain checked
    return load_domain_data(data, with_source=with_source, backbone=raw["model"].get("backbone"))


@torch.inference_mode()
def features_of(model: torch.nn.Module, x, batch: int = 1000) -> np.ndarray:
    model.eval()
    out = [model(torch.as_tensor(np.asarray(x[i : i + batch])))[1].float() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def embed(run_dir: str | Path, domain: str, benchmark: str | None = None, finetune: int = 0,
          ways: int = 5, shots: int = 5, lr: float = 1e-4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A trained run's features of a domain's labelled test split, with the labels: the run's
    own data spec with that domain as the target (and ``benchmark`` if given). ``finetune``:
    episodes of episodic fine-tuning on the run's source training split first."""
    from shiftray.models.load import load_trained_model

    model, _ = load_trained_model(run_dir)
    data = _domain_data(run_dir, domain, benchmark, with_source=finetune > 0)
    test = data.target_test
    if test.y is None:
        raise UserInputError(f"the {domain} test split has no labels: few-shot episodes need them")
    if finetune:
        episodic_finetune(model, data.source.x, data.source.y, ways, shots, finetune, lr=lr, seed=seed)
    return features_of(model, test.x), np.asarray(test.y)
