"""The serving application's arguments (the ``args:`` of a Ray Serve config file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shiftray.serving.auth import AuthArgs
from shiftray.serving.catalog import check_name, root_models


class AppArgs(BaseModel):
    """`shiftray.serving:build_app` arguments. Paths are resolved when the application is built,
    against the directory it is built from (or absolute)."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, str] = Field(
        default_factory=dict, description="model name -> run directory (or checkpoint directory)"
    )
    models_root: str | None = Field(
        None, description="a directory whose sub-directories are run directories, named by them"
    )
    max_batch_size: int = Field(32, ge=1, le=4096, description="requests per forward pass")
    batch_wait_timeout_s: float = Field(
        0.0,
        ge=0,
        le=5,
        description="how long a batch waits to fill up (0: a batch is what "
        "queued while the previous one ran; a lone request waits for nothing)",
    )
    max_queued_requests: int = Field(
        32,
        ge=1,
        le=4096,
        description="prediction requests a replica holds waiting beyond the "
        "2 x max_batch_size + 8 it works on; past them, 503 with Retry-After at once",
    )
    max_models_per_replica: int = Field(
        4, ge=1, description="models one replica keeps loaded (least recently used leaves)"
    )
    max_instances: int = Field(256, ge=1, description="instances in one request")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="request body limit (413)")
    request_timeout_s: float = Field(30.0, gt=0, description="503 after this long")
    drift_window: int = Field(256, ge=8, le=512, description="recent inputs the drift test sees")
    drift_every_s: float = Field(2.0, gt=0, description="how often the drift test runs")
    replicas: int | None = Field(
        None, ge=1, description="model replicas (else the config file's, or 1)"
    )
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int | None = Field(None, ge=1, description="torch threads per model replica")
    auth: AuthArgs | None = Field(None, description="API keys (none: the endpoint is open)")

    def max_ongoing_requests(self) -> int:
        """Requests a replica works on at once: one batch computing, the next one decoding and
        filling, and a few more decoding (a large body takes a while to decode); the next
        ``max_queued_requests`` wait, and past them Serve answers 503 at once."""
        return 2 * self.max_batch_size + 8

    @field_validator("models")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            check_name(name)
        return v

    @model_validator(mode="after")
    def _some_model(self) -> AppArgs:
        if not self.models and not self.models_root:
            raise ValueError("no models: give `models` (name -> run directory) or `models_root`")
        return self

    def named_paths(self) -> dict[str, str]:
        """name -> absolute run directory (models_root's sub-directories, then ``models``)."""
        found = root_models(self.models_root) if self.models_root else {}
        found |= {n: str(Path(p).expanduser().resolve()) for n, p in self.models.items()}
        return found
