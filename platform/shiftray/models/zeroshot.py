"""Zero-shot classification with a CLIP model (Radford et al., ICML 2021), through transformers'
``CLIPModel``: the classes are named, not trained.

Each class name is written into every prompt template ("a photo of a {}."), the text tower g
embeds the prompts, and the class embedding is the normalised mean of the normalised prompt
embeddings (CLIP's prompt ensembling):

    w_k = normalize( (1/T) sum_t normalize(g(template_t(class_k))) ).

An image x is embedded by the vision tower h, and its logits are the scaled cosine
similarities, exp(s) * normalize(h(x)) . w_k, with s CLIP's learned log temperature. The module
returns ``(logits, features)`` like a trained shiftray model, so it serves as a frozen feature
extractor (the features are normalize(h(x))) and as a distillation teacher. Weights come from
the hub or a local folder (``HF_HUB_OFFLINE=1``: local only).

In job specs: ``model.backbone: clip/<hub name or folder>`` makes CLIP's image tower (with its
projection) the backbone (`clip_backbone`; ``finetune.strategy: feature-extraction`` keeps it
frozen), and ``method: {name: distill, params: {teacher: zeroshot:<name or folder>}}`` makes the
zero-shot classifier of the job's class names the teacher (`ZeroShotTeacher`). Both take
shiftray's raw images (N, C, H, W) in [0, 1]: `clip_pixels` repeats grey channels, resizes to
CLIP's input size and applies CLIP's normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a close-up photo of the {}.",
    "a low resolution photo of a {}.",
    "a drawing of a {}.",
)


def prompts(classes: Sequence[str], templates: Sequence[str] = TEMPLATES) -> list[list[str]]:
    """Each class's prompts: every template with the class name (``_`` read as a space)."""
    return [[t.format(c.replace("_", " ")) for t in templates] for c in classes]


def embedding(out: Any) -> torch.Tensor:
    """The projected embedding from ``get_text_features`` / ``get_image_features`` (a tensor,
    or an output whose ``pooler_output`` holds it, depending on the transformers version)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's image normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(x: torch.Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """Raw images in [0, 1] -> CLIP's pixel_values: 3 channels, size x size, normalised."""
    import torch.nn.functional as F

    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bicubic", align_corners=False,
                          antialias=True).clamp(0, 1)  # fmt: skip
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _norm_stats(folder: str) -> tuple[tuple, tuple]:
    """The image mean and std a CLIP folder's preprocessor_config.json names (else OpenAI's)."""
    import json
    from pathlib import Path

    cfg = Path(folder) / "preprocessor_config.json"
    if cfg.is_file():
        raw = json.loads(cfg.read_text())
        return tuple(raw.get("image_mean", CLIP_MEAN)), tuple(raw.get("image_std", CLIP_STD))
    return CLIP_MEAN, CLIP_STD


class CLIPImageFeatures(nn.Module):
    """CLIP's image tower and projection as a backbone: raw images -> normalize(h(x))."""

    def __init__(self, vision: nn.Module, projection: nn.Module, size: int, mean, std) -> None:
        super().__init__()
        self.vision, self.projection = vision, projection
        self.size, self.mean, self.std = size, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.vision(pixel_values=clip_pixels(x, self.size, self.mean, self.std))
        return unit(self.projection(out.pooler_output))


def clip_backbone(name: str, input_shape, pretrained: bool | str = False, **config):
    """``model.backbone: clip/<name>``: a CLIP model's image tower and projection (the text
    tower is dropped); layer groups: the stem, each encoder layer, the final norm and projection."""
    from transformers import CLIPConfig, CLIPModel

    from shiftray.errors import UserInputError
    from shiftray.models.backbones import Backbone

    if len(input_shape) != 3:
        raise UserInputError(
            f"model.backbone clip/{name} reads images; inputs have shape {input_shape}"
        )
    try:
        if pretrained:
            clip = CLIPModel.from_pretrained(name, **config)
        else:
            clip = CLIPModel(CLIPConfig.from_pretrained(name, **config))
    except OSError as e:
        raise UserInputError(f"model.backbone clip/{name}: cannot load it ({e})") from None
    module = CLIPImageFeatures(clip.vision_model, clip.visual_projection,
                               clip.config.vision_config.image_size, *_norm_stats(name))  # fmt: skip
    groups: dict[int, list[str]] = {}
    for n, _ in module.named_parameters():
        if "encoder.layers." in n:  # vision.encoder.layers.<i>.
            key = int(n.split("encoder.layers.")[1].split(".")[0]) + 1
        else:  # the stem (embeddings, pre-norm) first, the final norm and projection last
            key = 0 if "embeddings" in n or "pre_layrnorm" in n else 10**6
        groups.setdefault(key, []).append(n)
    return Backbone(
        module, int(clip.config.projection_dim), layer_groups=[groups[k] for k in sorted(groups)]
    )


class ZeroShotCLIP(nn.Module):
    """A frozen CLIP model and the class embeddings of ``classes`` (see the module docstring)."""

    def __init__(self, model: nn.Module, tokenizer: Any, classes: Sequence[str],
                 templates: Sequence[str] = TEMPLATES) -> None:  # fmt: skip
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.classes = list(classes)
        self.templates = list(templates)
        self.register_buffer("class_embeddings", self.encode_classes(tokenizer))

    @torch.no_grad()
    def encode_classes(self, tokenizer: Any) -> torch.Tensor:
        limit = self.model.config.text_config.max_position_embeddings
        rows = []
        for texts in prompts(self.classes, self.templates):
            tokens = tokenizer(
                texts, padding=True, truncation=True, max_length=limit, return_tensors="pt"
            )
            text = embedding(self.model.get_text_features(input_ids=tokens["input_ids"],
                                                          attention_mask=tokens["attention_mask"]))  # fmt: skip
            rows.append(unit(unit(text).mean(dim=0)))
        return torch.stack(rows)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = unit(embedding(self.model.get_image_features(pixel_values=pixel_values)))
        return self.model.logit_scale.exp() * features @ self.class_embeddings.T, features

    def forward_raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw images in [0, 1] (shiftray's inputs), prepared as CLIP expects."""
        size = self.model.config.vision_config.image_size
        return self(clip_pixels(x, size, *getattr(self, "norm_stats", (CLIP_MEAN, CLIP_STD))))

    @classmethod
    def from_pretrained(cls, name_or_path: str, classes: Sequence[str],
                        templates: Sequence[str] = TEMPLATES) -> ZeroShotCLIP:  # fmt: skip
        from transformers import AutoTokenizer, CLIPModel

        zs = cls(CLIPModel.from_pretrained(name_or_path), AutoTokenizer.from_pretrained(name_or_path),
                 classes, templates)  # fmt: skip
        zs.norm_stats = _norm_stats(name_or_path)
        return zs


class ZeroShotTeacher(nn.Module):
    """A zero-shot classifier of the job's classes as a distillation teacher: raw images in,
    ``(logits, features)`` out, frozen."""

    def __init__(self, zs: ZeroShotCLIP) -> None:
        super().__init__()
        self.zs = zs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.zs.forward_raw(x)
