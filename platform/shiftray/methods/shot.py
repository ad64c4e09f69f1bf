"""SHOT: source-free adaptation by hypothesis transfer.

Liang, Hu, Feng, "Do We Really Need to Access the Source Data? Source Hypothesis Transfer for
Unsupervised Domain Adaptation", ICML 2020.

Start from a source-trained model (``source_checkpoint``, e.g. an ``erm`` run with label
smoothing). Keep its classifier h fixed (the source hypothesis: lr 0) and adapt the feature
extractor g on target data alone; the source data is never read. With p = softmax(h(g(x_t))):

    L_ent = E_x[ H(p(x)) ]                  (confident predictions)
    L_div = H( E_x[p(x)] )                  (diverse predictions over the batch)
    L_pl  = CE(h(g(x_t)), y^)               (self-supervised pseudo-labels)
    L = im_weight * (L_ent - L_div) + beta * L_pl

Pseudo-labels y^ come from weighted k-means in feature space over the whole target set,
refreshed every ``refresh_every`` steps: centroids c_k = sum_i p_ik f_i / sum_i p_ik,
y^_i = argmin_k cosine_distance(f_i, c_k), then one more round with hard assignments.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from shiftray.methods.base import AdaptationMethod, StepOutput
from shiftray.methods.layers import entropy
from shiftray.methods.params import SHOTParams  # torch-free
from shiftray.models.load import check_identity, load_trained_model, resolve_checkpoint


@torch.no_grad()
def cluster_pseudo_labels(
    feats: torch.Tensor, probs: torch.Tensor, rounds: int = 2
) -> torch.Tensor:
    """SHOT's self-supervised labels: probability-weighted centroids, nearest by cosine."""
    f = torch.cat([feats, torch.ones(len(feats), 1, dtype=feats.dtype)], dim=1)
    f = F.normalize(f, dim=1)
    weights = probs
    for _ in range(rounds):
        centroids = weights.t() @ f / (1e-8 + weights.sum(0)[:, None])
        labels = (f @ F.normalize(centroids, dim=1).t()).argmax(dim=1)  # min cosine distance
        weights = F.one_hot(labels, probs.shape[1]).to(f.dtype)
    return labels


class SHOT(AdaptationMethod):
    """Source-free hypothesis transfer (Liang et al., ICML 2020): IM loss + clustered labels."""

    Params = SHOTParams
    uses_source = SHOTParams.uses_source
    needs_whole_target = SHOTParams.needs_whole_target  # declared where validation reads it

    def __init__(self, params: SHOTParams, info) -> None:
        super().__init__(params, info)
        self.refresh_every = params.refresh_every
        self.register_buffer("pseudo", torch.full((info.num_target,), -1, dtype=torch.long))

    def setup(self, model):
        if self.params.source_checkpoint:
            ckpt = resolve_checkpoint(self.params.source_checkpoint)
            if self.info.job is not None:  # the source model of this job's source domain
                fields = ("benchmark", "source", "classes", "backbone", "normalize")
                check_identity(ckpt, self.info.job, fields, "method.params.source_checkpoint")
            source, _ = load_trained_model(ckpt)  # LoRA adapters folded in: plain names
            model.load_state_dict({k: v for k, v in source.state_dict().items() if not k.startswith("task_")})

    def lr_scales(self):
        return {"head": 0.0}  # the source hypothesis stays fixed

    @torch.no_grad()
    def refresh(self, model, target, device):
        was = model.training
        model.eval()
        feats, probs = [], []
        for start in range(0, len(target), self.params.eval_batch_size):
            x = torch.from_numpy(
                np.ascontiguousarray(target.x[start : start + self.params.eval_batch_size])
            )
            logits, f = model(x.to(device))
            feats.append(f.float().cpu())
            probs.append(F.softmax(logits.float(), dim=1).cpu())
        model.train(was)
        self.pseudo.copy_(
            cluster_pseudo_labels(torch.cat(feats), torch.cat(probs)).to(self.pseudo.device)
        )

    def forward(self, model, batch, progress):
        logits, _ = model(batch.x_t)
        p = F.softmax(logits, dim=1)
        ent = entropy(p).mean()
        p_mean = p.mean(dim=0)
        div = -(p_mean * torch.log(p_mean + 1e-8)).sum()
        pl = F.cross_entropy(logits, self.pseudo[batch.idx_t])
        loss = self.params.im_weight * (ent - div) + self.params.beta * pl
        return StepOutput(loss, {"ent": ent.detach(), "div": div.detach(), "pl_loss": pl.detach()})
