"""Per-domain LoRA adapters served from one copy of their base model.

A replica that serves several LoRA runs of one base (an adapter per hospital, per product
category) would otherwise hold the frozen base once per model. `SharedBases` keeps, per base
fingerprint (``lora_base_sha256`` in model.safetensors: `shiftray.finetune.lora.base_fingerprint`,
a sha256 over the frozen weights) and device, the base parameters of the first model loaded;
each later model of that base points its base parameters at those tensors and drops its own.
What stays per model is what differs: the adapters (r (d_in + d_out) numbers per adapted layer),
BatchNorm statistics, the bottleneck and the heads. Adapters stay unmerged (a merged model
would own its whole weight): y = W x + (alpha / r) B A x, with W shared.

Inference only reads the shared tensors, so batches of different models can run at once (the
multiplexed deployment never mixes models within a batch). The table holds its tensors weakly:
when the last model of a base is evicted (multiplexing's least recently used), the base goes.
"""

from __future__ import annotations

import threading
import weakref

from torch import nn

from shiftray.finetune.lora import is_adapter


def _owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (root.get_submodule(path) if path else root), leaf


class SharedBases:
    """The frozen base parameters of the LoRA models loaded in this process, by fingerprint."""

    def __init__(self) -> None:
        self._bases: dict[tuple[str, str], weakref.WeakValueDictionary] = {}
        self._lock = threading.Lock()

    def share(self, model) -> int:
        """Point ``model``'s frozen base parameters (an `AdaptModel` with LoRA) at the copy an
        earlier model of the same base holds, or make its own the copy. Returns the bytes of
        base weights it no longer holds itself (0 for the first model of a base, or no LoRA)."""
        if getattr(model, "lora", None) is None:
            return 0
        sha = model.checkpoint_metadata()["lora_base_sha256"]
        device = str(next(model.parameters()).device)
        saved = 0
        with self._lock:
            kept = self._bases.setdefault((sha, device), weakref.WeakValueDictionary())
            for name, p in list(model.backbone.named_parameters()):
                if is_adapter(name):
                    continue
                base = kept.get(name)
                if base is None:
                    kept[name] = p
                    continue
                if base.shape != p.shape or base.dtype != p.dtype:  # same sha: cannot happen
                    raise RuntimeError(f"shared base tensor {name}: {base.shape} vs {p.shape}")
                owner, leaf = _owner(model.backbone, name)
                owner._parameters[leaf] = base
                saved += p.numel() * p.element_size()
        return saved

    def held(self) -> dict[str, int]:
        """Base fingerprint (12 characters) -> bytes of base weights held once for its models."""
        with self._lock:
            return {sha[:12]: sum(t.numel() * t.element_size() for t in kept.values())
                    for (sha, _), kept in self._bases.items() if len(kept)}  # fmt: skip


SHARED = SharedBases()  # one per process: a Serve replica's models share through it
