"""`shiftray data example`: small generated data in the layouts shiftray reads, to try the
bring-your-own-data path end to end (and to see what your files should look like).

- ``imagefolder``: ``OUT/<domain>/<class>/*.png|jpg``: red and blue squares on noise; the
  target domain ``night`` is the source ``day`` at half the brightness.
- ``table``: one CSV with feature columns ``w0..`` (word counts, L1-normalised per row: every
  value around 1/dim, the scale on which un-normalised training collapses), ``label``
  (``negative`` / ``positive``) and ``domain`` (``lab`` / ``field``, whose vocabulary is
  shifted).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def example_imagefolder(out: str | Path, per_class: int = 40, size: int = 32, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for domain, brightness in (("day", 1.0), ("night", 0.5)):
        for cls, channel in (("red", 0), ("blue", 2)):
            folder = Path(out) / domain / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                lo, hi = sorted(rng.integers(2, size - 2, 2))
                img[lo : hi + 2, lo : hi + 2, channel] = int(220 * brightness)
                Image.fromarray(img).save(folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return Path(out)


def example_table(out: str | Path, rows: int = 400, dim: int = 400, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*(f"w{i}" for i in range(dim)), "label", "domain"])
        for domain, offset in (("lab", 0), ("field", dim // 10)):
            for i in range(rows):
                y = i % 2
                p = np.ones(dim)
                p[np.roll(np.arange(dim) < dim // 2, offset + y * dim // 2)] += 1.0
                counts = rng.multinomial(60, p / p.sum())
                label = ("negative", "positive")[y]
                writer.writerow([*(counts / counts.sum()).round(6), label, domain])
    return out


EXAMPLES = {"imagefolder": example_imagefolder, "table": example_table}
