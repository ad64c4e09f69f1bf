"""KServe V1: ``POST /v1/models/{name}:predict`` with ``{"instances": [...]}`` answers
``{"model": name, "predictions": [{"label": ..., "index": ..., "probabilities": [...],
"shift_score": ..., "target_probability": ...}, ...]}`` (one object per instance; a signal the
model does not have is null)."""

from __future__ import annotations

import numpy as np

from shiftray.serving.inputs import BadInput, InputSpec, v1_instances
from shiftray.serving.predictor import OUTPUTS, Prediction
from shiftray.serving.protocols.common import dumps, fields, parse_json

REQUEST_SCHEMA = {
    "title": "V1Request",
    "type": "object",
    "required": ["instances"],
    "additionalProperties": False,
    "properties": {
        "instances": {
            "type": "array",
            "description": "one per input: a list of numbers (feature vector), an array (image), "
            '{"b64": "<base64 PNG/JPEG/...>"} (image), or a string (text model)',
            "items": {},
        }
    },
}
RESPONSE_SCHEMA = {
    "title": "V1Response",
    "type": "object",
    "required": ["model", "predictions"],
    "properties": {
        "model": {"type": "string"},
        "predictions": {"type": "array", "items": {
            "type": "object",
            "properties": {o.name: {"description": o.description} for o in OUTPUTS},
        }},
    },
}  # fmt: skip


def decode(body: bytes, spec: InputSpec, max_instances: int) -> np.ndarray:
    """The body -> (N, *shape) model input (float32; int64 token ids for a text model)."""
    doc = fields(parse_json(body), "body", {"instances"}, {"instances"})
    if not isinstance(doc["instances"], list):
        got = type(doc["instances"]).__name__
        raise BadInput(f"instances: expected a list (one entry per input), got {got}")
    return v1_instances(doc["instances"], spec, max_instances)


def encode(pred: Prediction) -> bytes:
    n = len(pred)
    cols = {o.name: [None] * n if (t := pred.tensor(o.name)) is None else t.tolist()
            for o in OUTPUTS}  # fmt: skip
    rows = [{k: v[i] for k, v in cols.items()} for i in range(n)]
    return dumps({"model": pred.model, "predictions": rows})
