"""The built-in validators (registry ``validator``): each ``ValidationData -> float``, higher is
better, none reading a target label. N target rows with class probabilities p_i (K classes),
features f_i; held-out source rows (x_j, y_j) where a validator needs them.

Benchmarks of these criteria: Musgrave, Belongie, Lim, "Three New Validators and a Large-Scale
Benchmark Ranking for Unsupervised Domain Adaptation" (2022); Saito et al. (ICCV 2021).
"""

from __future__ import annotations

import numpy as np
import torch

from shiftray.evaluate.validators.base import ValidationData, validator
from shiftray.methods.layers import entropy as _entropy_rows  # per row: -sum_c p_c log p_c


@validator()
def entropy(d: ValidationData) -> float:
    """Negative mean prediction entropy, -1/N sum_i H(p_i): confident target predictions score
    higher (Morerio, Cavazza, Murino, ICLR 2018)."""
    return float(-_entropy_rows(d.probs).mean())


@validator()
def im(d: ValidationData) -> float:
    """Information maximisation, H(mean_i p_i) - 1/N sum_i H(p_i): confident and diverse
    (Gomes, Krause, Perona, NeurIPS 2010; SHOT's objective)."""
    return float(_entropy_rows(d.probs.mean(0, keepdim=True))[0] - _entropy_rows(d.probs).mean())


@validator()
def bnm(d: ValidationData) -> float:
    """Batch nuclear norm, ||P||_* / N for the N x K prediction matrix P: large when predictions
    are both confident and diverse (Cui et al., "Batch Nuclear-norm Maximization", CVPR 2020)."""
    return float(torch.linalg.svdvals(d.probs).sum() / len(d.probs))


SND_TEMPERATURE = 0.05


@validator()
def snd(d: ValidationData) -> float:
    """Soft neighbourhood density (Saito et al., ICCV 2021): with q_i = p_i / ||p_i||,
    s_ij = q_i . q_j (j != i) and a_ij = softmax_j(s_ij / 0.05), SND = 1/N sum_i H(a_i): high
    when each target point has many close neighbours (dense, well-clustered predictions)."""
    q = torch.nn.functional.normalize(d.probs, dim=1)
    s = q @ q.T
    s.fill_diagonal_(float("-inf"))
    a = torch.softmax(s / SND_TEMPERATURE, dim=1)
    return float(_entropy_rows(a).mean())


@validator(needs_source=True)
def source_acc(d: ValidationData) -> float:
    """Accuracy on the held-out labelled source rows (the classic, shift-blind criterion)."""
    return float((d.source_probs.argmax(1) == d.source_labels).double().mean())


def domain_classifier(source: np.ndarray, target: np.ndarray):
    """A logistic regression on standardised features telling target (1) from source (0)
    (DEV's density ratio, the run report's proxy A-distance)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([source, target])
    y = np.r_[np.zeros(len(source)), np.ones(len(target))]
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)


def density_ratio(source_feats: np.ndarray, target_feats: np.ndarray) -> np.ndarray:
    """w(x) = p_T(x) / p_S(x) at the source rows, from `domain_classifier`:
    w = (n_S / n_T) P(T | x) / P(S | x)."""
    clf = domain_classifier(source_feats, target_feats)
    pt = np.clip(clf.predict_proba(source_feats)[:, 1], 1e-6, 1 - 1e-6)
    return len(source_feats) / len(target_feats) * pt / (1 - pt)


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
    """Deep embedded validation risk: with weighted losses l_w = w * l and the control variate
    eta = -Cov(l_w, w) / Var(w), risk = mean(l_w) + eta * mean(w) - eta (E[w] = 1 under the
    source distribution, so the correction has mean zero and lowers the variance)."""
    lw = weights * losses
    var = np.var(weights, ddof=1)
    eta = 0.0 if var <= 0 else -np.cov(np.stack([lw, weights]), ddof=1)[0, 1] / var
    return float(lw.mean() + eta * weights.mean() - eta)


@validator(needs_source=True)
def dev(d: ValidationData) -> float:
    """Negative DEV risk (You, Wang, Long, Jordan, ICML 2019): the held-out source rows'
    cross-entropy, importance-weighted towards the target by a domain classifier on the
    features (`density_ratio`), with the control variate of `dev_risk`."""
    losses = -torch.log(
        d.source_probs.gather(1, d.source_labels[:, None]).squeeze(1).clamp_min(1e-12)
    )
    w = density_ratio(d.source_features.numpy(), d.features.numpy())
    return -dev_risk(losses.numpy(), w)


@validator()
def class_ami(d: ValidationData) -> float:
    """ClassAMI (Musgrave et al. 2022): the adjusted mutual information between the predicted
    classes and a k-means clustering (k = K) of the L2-normalised target features; high when the
    classifier's decision follows the clusters the features form. Target rows only here."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score

    k = d.probs.shape[1]
    f = torch.nn.functional.normalize(d.features, dim=1).numpy()
    clusters = KMeans(n_clusters=min(k, len(f)), n_init=3, random_state=0).fit_predict(f)
    return float(adjusted_mutual_info_score(clusters, d.probs.argmax(1).numpy()))


MIX_LAMBDA = 0.55


def mix_partners(labels: np.ndarray, same: bool, rng: np.random.Generator) -> np.ndarray:
    """For each row i, a random row j != i whose pseudo-label is (``same``) or is not the
    label of i; -1 where there is none."""
    out = np.full(len(labels), -1)
    for i, c in enumerate(labels):
        pool = np.flatnonzero((labels == c) == same)
        pool = pool[pool != i]
        if len(pool):
            out[i] = rng.choice(pool)
    return out


@validator(needs_inputs=True, mixes_inputs=True)
def mixval(d: ValidationData) -> float:
    """MixVal (Hu et al., "Mixed Samples as Probes for Unsupervised Model Selection in Domain
    Adaptation", NeurIPS 2023): probe the model with mixed target inputs
    x = 0.55 x_i + 0.45 x_j and check it predicts i's pseudo-label y^_i = argmax p_i. ICE_inter
    mixes rows of different pseudo-labels, ICE_intra rows of the same one; the score is
    ICE_inter + ICE_intra (each the fraction of probes answered with y^_i)."""
    labels = d.probs.argmax(1).numpy()
    rng = np.random.default_rng(0)
    total = 0.0
    for same in (False, True):
        j = mix_partners(labels, same, rng)
        i = np.flatnonzero(j >= 0)
        if not len(i):
            continue
        x = MIX_LAMBDA * d.inputs[i].float() + (1 - MIX_LAMBDA) * d.inputs[j[i]].float()
        total += float((d.predict(x).argmax(1).numpy() == labels[i]).mean())
    return total
