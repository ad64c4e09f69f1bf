"""LoRA adapters on the backbone (Hu et al., "LoRA: Low-Rank Adaptation of Large Language
Models", ICLR 2022), injected with peft.

Each targeted linear layer keeps its pre-trained weight W frozen and learns a low-rank update:

    y = W x + (alpha / r) * B A x,    A in R^{r x d_in} (Kaiming init), B in R^{d_out x r} (zeros)

so training starts exactly at the pre-trained model, and only A and B (plus the new bottleneck
and head) train and are checkpointed: r (d_in + d_out) numbers per layer instead of d_in d_out.
The checkpoint names its base by a fingerprint of the frozen weights (`base_fingerprint`); a
loader rebuilds the base from the spec's ``model.pretrained`` and refuses a different one.
`merge_into` folds the update into W (W' = W + (alpha / r) B A) for serving: the merged model
is a plain one, no peft at inference, and predicts what the adapted one does.
"""

from __future__ import annotations

import hashlib
import re

import torch
from torch import nn

from shiftray.errors import UserInputError

# suffixes of the attention projections LoRA targets by default (the paper adapts W_q and W_v):
# timm ViTs fuse them in ``qkv``; BERT-style encoders (MiniLM) name them ``query`` / ``value``
AUTO_TARGETS: tuple[tuple[str, ...], ...] = (
    ("qkv",), ("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"),
)  # fmt: skip
_ADAPTER = re.compile(r"\.lora_(A|B|embedding_A|embedding_B|magnitude_vector)\.[^.]+(?=\.|$)")


def is_adapter(name: str) -> bool:
    """A LoRA parameter (``...qkv.lora_A.default.weight``), not a base one."""
    return ".lora_" in name


def canonical(name: str) -> str:
    """The base model's name for a parameter of the injected model: ``x.qkv.base_layer.weight``
    and the adapters ``x.qkv.lora_A.default.weight`` both map to ``x.qkv.weight``."""
    return _ADAPTER.sub("", name.replace(".base_layer", ""))


def _linear_names(module: nn.Module) -> list[str]:
    """Layers LoRA can adapt: linear layers and 2-D convolutions (peft supports both)."""
    return [n for n, m in module.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def lora_targets(module: nn.Module, wanted: list[str] | None) -> list[str]:
    """The module-name suffixes to adapt: ``wanted``, each matching at least one linear layer,
    or the first of `AUTO_TARGETS` the backbone has."""
    linear = _linear_names(module)
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in linear})
    if wanted:
        other = sorted({n for n, _ in module.named_modules() for t in wanted
                        if (n == t or n.endswith(f".{t}")) and n not in linear})  # fmt: skip
        if other:
            raise UserInputError(
                f"finetune.lora.target_modules {wanted} also name {other[:3]}, which are not linear "
                "or conv layers; use a longer name suffix that names only those"
            )
        missing = [t for t in wanted if not any(n == t or n.endswith(f".{t}") for n in linear)]
        if missing:
            raise UserInputError(
                f"finetune.lora.target_modules: no linear or conv layer named {missing} in this "
                f"backbone; its linear and conv layers end in: {', '.join(suffixes) or '(none)'}"
            )
        return list(wanted)
    for group in AUTO_TARGETS:
        if all(s in suffixes for s in group):
            return list(group)
    raise UserInputError(
        "finetune.lora.target_modules: no attention projection found to adapt by default; "
        f"name them (this backbone's linear layers end in: {', '.join(suffixes) or '(none)'})"
    )


def add_lora(backbone: nn.Module, rank: int, alpha: float, dropout: float,
             targets: list[str] | None) -> list[str]:  # fmt: skip
    """Inject LoRA layers into ``backbone`` in place; the base parameters stop requiring
    gradients. Returns the targeted suffixes."""
    from peft import LoraConfig, inject_adapter_in_model

    chosen = lora_targets(backbone, targets)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=chosen)
    inject_adapter_in_model(cfg, backbone)
    for name, p in backbone.named_parameters():
        p.requires_grad_(is_adapter(name))
    return chosen


def adapter_groups(groups: list[list[str]], backbone: nn.Module) -> list[list[str]]:
    """The backbone's layer groups (base names) -> the adapter parameters in each: a LoRA
    layer's A and B join the group of the layer they adapt."""
    where = {n: i for i, names in enumerate(groups) for n in names}
    out: list[list[str]] = [[] for _ in groups]
    for name, _ in backbone.named_parameters():
        if is_adapter(name):
            out[where.get(canonical(name), len(groups) - 1)].append(name)
    return out


def base_fingerprint(backbone: nn.Module) -> str:
    """sha256 over the frozen base parameters (names, shapes, bytes): the adapter's base model.
    Buffers are left out: BatchNorm statistics move in training and are checkpointed instead."""
    h = hashlib.sha256()
    for name, t in sorted(backbone.named_parameters()):
        if is_adapter(name):
            continue
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{canonical(name)}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def merged_state(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The plain backbone's state dict with every LoRA update folded into its base weight."""
    from peft.tuners.lora import LoraLayer

    state = {canonical(k): v.clone() for k, v in backbone.state_dict().items() if not is_adapter(k)}
    for name, m in backbone.named_modules():
        if isinstance(m, LoraLayer):
            for adapter in m.active_adapters:
                state[f"{name}.weight"] += m.get_delta_weight(adapter).to(state[f"{name}.weight"])
    return state


def trainable_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
