"""A generated, shifted classification problem: no files needed, for tests and examples.

Class ``k`` is a Gaussian blob around a random centre ``mu_k`` in ``dim`` dimensions. The
source domain ``a`` samples it as is; the target domain ``b`` applies a fixed rotation of
the first two coordinates by ``angle`` degrees plus an offset ``shift`` (a covariate shift that
a source-only classifier partly survives and an aligned one survives better).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shiftray.data.arrays import DomainArrays
from shiftray.data.readers.base import Benchmark, InputContract
from shiftray.errors import UserInputError


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(512, gt=0, description="examples per domain split")
    dim: int = Field(8, ge=2)
    num_classes: int = Field(3, ge=2)
    angle: float = Field(30.0, description="rotation of the target (degrees)")
    shift: float = Field(1.0, description="offset of the target along every axis")
    noise: float = Field(0.6, gt=0.0)
    scale: float = Field(1.0, gt=0.0, description="multiplies every input (tiny or huge features)")
    image: bool = Field(False, description="shape inputs as (1, s, s) images, dim = s*s")
    seed: int = 0


class Synthetic(Benchmark):
    """Generated Gaussian blobs with a rotated, shifted target domain (for tests)."""

    name = "synthetic"
    Options = SyntheticOptions

    @classmethod
    def domains(cls, opts):
        return ["a", "b"]

    @classmethod
    def input_contract(cls, opts, input_shape) -> InputContract:
        """Gaussian blobs: any finite values, also when shaped as (1, s, s) "images" (no
        encoded image of another size fits them)."""
        contract = super().input_contract(opts, input_shape)
        return replace(contract, resize="none", range=None)

    @classmethod
    def class_names(cls, opts):
        return [f"c{i}" for i in range(opts.num_classes)]

    @classmethod
    def read(cls, domain, split, opts):
        centres = np.random.default_rng(opts.seed).normal(0, 2.0, size=(opts.num_classes, opts.dim))
        salt = {"a": 11, "b": 23}[domain] + {"train": 0, "test": 1}[split]
        rng = np.random.default_rng(opts.seed * 1000 + salt)
        y = rng.integers(0, opts.num_classes, size=opts.n)
        x = centres[y] + rng.normal(0, opts.noise, size=(opts.n, opts.dim))
        if domain == "b":
            t = np.deg2rad(opts.angle)
            rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
            x[:, :2] = x[:, :2] @ rot.T
            x = x + opts.shift
        x = (x * opts.scale).astype(np.float32)
        if opts.image:
            side = int(round(opts.dim**0.5))
            if side * side != opts.dim:
                raise UserInputError(f"synthetic image=true needs a square dim, got {opts.dim}")
            x = x.reshape(-1, 1, side, side)
        return DomainArrays(x, y.astype(np.int64), domain, split)
