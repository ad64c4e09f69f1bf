"""What the protocols share: JSON parsing that answers 400, the inference request they decode
to, and the requested-outputs check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from shiftray.serving.inputs import BadInput
from shiftray.serving.predictor import OUTPUTS

OUTPUT_NAMES = tuple(o.name for o in OUTPUTS)


@dataclass
class InferRequest:
    """A decoded Open Inference Protocol request (HTTP or gRPC)."""

    x: np.ndarray  # (N, *input shape): the model's input
    id: str | None = None
    outputs: list[str] = field(default_factory=lambda: list(OUTPUT_NAMES))
    binary: set[str] = field(default_factory=set)  # outputs answered as raw bytes (HTTP)


def parse_json(body: bytes) -> Any:
    """The body's JSON; 400 when it is not JSON (orjson: strict, NaN and Infinity refused)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadInput(f"the body is not valid JSON ({e})", status=400) from None


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def fields(doc: Any, where: str, required: set[str], allowed: set[str]) -> dict[str, Any]:
    """``doc`` must be an object with the ``required`` keys and no key outside ``allowed``."""
    if not isinstance(doc, dict):
        raise BadInput(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if missing := sorted(required - set(doc)):
        raise BadInput(f"{where}: missing field(s) {missing}")
    if extra := sorted(set(doc) - allowed):
        raise BadInput(f"{where}: unknown field(s) {extra}; allowed: {sorted(allowed)}")
    return doc


def check_outputs(names: list[str]) -> list[str]:
    if unknown := sorted(set(names) - set(OUTPUT_NAMES)):
        raise BadInput(f"outputs {unknown}: available are {list(OUTPUT_NAMES)}")
    if len(set(names)) != len(names):
        raise BadInput(f"outputs {names}: each output at most once")
    return names
