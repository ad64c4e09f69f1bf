"""The Open Inference Protocol (V2) over HTTP: ``POST /v2/models/{name}/infer``.

One input tensor named ``input``: a numeric datatype carries the instances themselves (``shape``
= [N, *instance shape]), ``BYTES`` carries N encoded images (base64 in JSON, raw bytes in binary)
or N texts. Outputs are the fields of `shiftray.serving.predictor.OUTPUTS` (all, or those the
request names).

The binary tensor extension (what Triton and KServe clients send for large tensors): the body is
a JSON header of ``Inference-Header-Content-Length`` bytes, then each binary tensor's raw bytes in
order; a tensor whose ``parameters.binary_data_size`` is set has no ``data`` in the header.
Numbers are little-endian in row-major order; a ``BYTES`` element is a 4-byte little-endian
length, then its bytes. Outputs come back as binary when the request says
``parameters.binary_data_output: true`` (all) or ``outputs[i].parameters.binary_data: true``.
So a 224x224x3 image travels as 602,112 bytes instead of 150,528 JSON numbers.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import numpy as np

from shiftray.serving.inputs import BadInput, InputSpec, v2_tensor
from shiftray.serving.predictor import OUTPUTS, Prediction
from shiftray.serving.protocols.common import (
    OUTPUT_NAMES,
    InferRequest,
    check_outputs,
    dumps,
    fields,
    parse_json,
)

HEADER_LENGTH = "inference-header-content-length"
RAW = {
    "FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT8": "i1", "INT16": "<i2", "INT32": "<i4",
    "INT64": "<i8", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
}  # fmt: skip
TENSOR_KEYS = {"name", "shape", "datatype", "data", "parameters"}
BINARY = "application/octet-stream"
REQUEST_SCHEMA = {
    "title": "V2Request", "type": "object", "required": ["inputs"], "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "enum": ["input"]},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "datatype": {"type": "string", "enum": ["BYTES", *RAW]},
                "data": {"description": "row-major numbers (flat or nested), or N base64 "
                         "images / texts for BYTES"},
                "parameters": {"type": "object",
                               "properties": {"binary_data_size": {"type": "integer"}}},
            }}},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "enum": list(OUTPUT_NAMES)},
                "parameters": {"type": "object",
                               "properties": {"binary_data": {"type": "boolean"}}}}}},
    },
}  # fmt: skip


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or not 0 < int(header_length) <= len(body):
        raise BadInput(f"Inference-Header-Content-Length {header_length!r}: the JSON header's "
                       f"length in bytes, between 1 and the body's {len(body)}", status=400)  # fmt: skip
    n = int(header_length)
    return body[:n], body[n:]


def _params(doc: dict, where: str) -> dict[str, Any]:
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadInput(f"{where}.parameters: expected an object")
    return params


def _bytes_elements(blob: bytes, where: str) -> list[bytes]:
    """Length-prefixed BYTES elements (4-byte little-endian length, then the bytes)."""
    out, pos = [], 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise BadInput(f"{where}: truncated BYTES element length at byte {pos}")
        (n,) = struct.unpack_from("<I", blob, pos)
        if pos + 4 + n > len(blob):
            raise BadInput(f"{where}: BYTES element of {n} bytes runs past the data")
        out.append(blob[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def binary_data(blob: bytes, shape: list, datatype: str, spec: InputSpec, where: str) -> Any:
    """Raw tensor bytes -> what `v2_tensor` takes as ``data`` (an array, base64 images, texts)."""
    if datatype == "BYTES":
        items = _bytes_elements(blob, where)
        if spec.kind == "text":
            try:
                return [b.decode("utf-8") for b in items]
            except UnicodeDecodeError:
                raise BadInput(f"{where}: a text is not valid UTF-8") from None
        return [base64.b64encode(b).decode("ascii") for b in items]
    if datatype not in RAW:
        raise BadInput(f"{where}.datatype {datatype!r} in binary: expected BYTES or one of "
                       f"{', '.join(RAW)}")  # fmt: skip
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        raise BadInput(f"{where}.shape {shape}: sizes must be non-negative integers")
    size = np.dtype(RAW[datatype]).itemsize
    if len(blob) != math.prod(shape) * size:
        raise BadInput(f"{where}: {len(blob)} bytes of binary data, shape {shape} of "
                       f"{datatype} needs {math.prod(shape) * size}")  # fmt: skip
    return np.frombuffer(blob, dtype=RAW[datatype]).reshape(shape)


def _input(doc: dict, rest: bytes, spec: InputSpec, limit: int) -> np.ndarray:
    inputs = doc["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise BadInput("inputs: send exactly one tensor named 'input'")
    where = "inputs[0]"
    t = fields(inputs[0], where, {"name", "shape", "datatype"}, TENSOR_KEYS)
    if t["name"] != "input" or not isinstance(t["datatype"], str):
        raise BadInput(f"{where}: the tensor is named 'input' with a string datatype; got "
                       f"name {t['name']!r}")  # fmt: skip
    if not isinstance(t["shape"], list):
        raise BadInput(f"{where}.shape: expected a list of sizes")
    size = _params(t, where).get("binary_data_size")
    if size is None:
        if "data" not in t:
            raise BadInput(f"{where}: no data (neither 'data' nor parameters.binary_data_size)")
        if rest:
            raise BadInput(f"{len(rest)} bytes after the JSON header that no tensor claims")
        data = t["data"]
    else:
        if "data" in t or not isinstance(size, int) or size != len(rest):
            raise BadInput(f"{where}.parameters.binary_data_size {size!r}: the {len(rest)} "
                           "bytes after the header, and no 'data'")  # fmt: skip
        data = binary_data(rest, t["shape"], t["datatype"], spec, where)
    return v2_tensor(t["shape"], t["datatype"], data, spec, limit)


def _outputs(doc: dict) -> tuple[list[str], set[str]]:
    """Requested output names, and which of them are wanted as binary."""
    all_binary = _params(doc, "body").get("binary_data_output") is True
    wanted = doc.get("outputs")
    if wanted is None:
        return list(OUTPUT_NAMES), set(OUTPUT_NAMES) if all_binary else set()
    if not isinstance(wanted, list):
        raise BadInput("outputs: expected a list of {'name': ...}")
    names, binary = [], set()
    for i, o in enumerate(wanted):
        o = fields(o, f"outputs[{i}]", {"name"}, {"name", "parameters"})
        params = _params(o, f"outputs[{i}]")
        if set(params) - {"binary_data"}:
            raise BadInput(f"outputs[{i}].parameters {sorted(params)}: only binary_data is "
                           "supported")  # fmt: skip
        if not isinstance(o["name"], str):
            raise BadInput(f"outputs[{i}].name: expected a string")
        names.append(o["name"])
        if params.get("binary_data", all_binary) is True:
            binary.add(o["name"])
    return check_outputs(names), binary


def decode(body: bytes, header_length: str | None, spec: InputSpec, limit: int) -> InferRequest:
    head, rest = _split(body, header_length)
    doc = fields(parse_json(head), "body", {"inputs"}, {"id", "inputs", "outputs", "parameters"})
    if doc.get("id") is not None and not isinstance(doc["id"], str):
        raise BadInput("id: expected a string")
    outputs, binary = _outputs(doc)
    return InferRequest(_input(doc, rest, spec, limit), doc.get("id"), outputs, binary)


def raw_bytes(t: np.ndarray, datatype: str) -> bytes:
    """A tensor as the binary extension (and gRPC's raw contents) carry it."""
    if datatype == "BYTES":
        items = [str(v).encode() for v in t.ravel()]
        return b"".join(struct.pack("<I", len(b)) + b for b in items)
    return np.ascontiguousarray(t, dtype=RAW[datatype]).tobytes()


def encode(req: InferRequest, pred: Prediction) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (binary outputs after the JSON header)."""
    outputs, blobs = [], []
    for o, t in pred.tensors(req.outputs):
        entry: dict[str, Any] = {"name": o.name, "datatype": o.datatype, "shape": list(t.shape)}
        if o.name in req.binary:
            blobs.append(raw_bytes(t, o.datatype))
            entry["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            entry["data"] = t.ravel().tolist()
        outputs.append(entry)
    head = dumps({"model_name": pred.model, "id": req.id, "outputs": outputs})
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream",
                                    HEADER_LENGTH: str(len(head))}  # fmt: skip


def tensor_metadata(spec: InputSpec, classes: int) -> dict[str, list[dict[str, Any]]]:
    """``inputs`` and ``outputs`` of the model metadata: BYTES carries encoded images or texts,
    a numeric tensor the arrays."""
    inputs = [{"name": "input", "datatype": "BYTES", "shape": [-1]}]
    if spec.kind != "text":
        array = [{"name": "input", "datatype": "FP32", "shape": [-1, *spec.shape]}]
        inputs = array + (inputs if spec.kind == "image" else [])
    outputs = [{"name": o.name, "datatype": o.datatype,
                "shape": [-1, classes] if o.per_class else [-1]} for o in OUTPUTS]  # fmt: skip
    return {"inputs": inputs, "outputs": outputs}
