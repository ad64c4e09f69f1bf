"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` (ServerLive,
ServerReady, ServerMetadata, ModelReady, ModelMetadata, ModelInfer), with the message classes of
``tritonclient.grpc.service_pb2`` (the service KServe and Triton share, so Triton's and KServe's
clients call it unchanged).

The input tensor is the HTTP protocol's (`shiftray.serving.protocols.oip_v2`): ``input``, numeric
or ``BYTES``, in ``raw_input_contents`` (little-endian, what tritonclient sends) or in the typed
``contents``; outputs go back in ``raw_output_contents``. Errors are gRPC status codes with the
message the HTTP endpoint would give (`STATUS`).
"""

from __future__ import annotations

import base64
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from shiftray.serving.inputs import BadInput, InputSpec, v2_tensor
from shiftray.serving.predictor import Prediction
from shiftray.serving.protocols.common import OUTPUT_NAMES, InferRequest, check_outputs
from shiftray.serving.protocols.oip_v2 import binary_data, raw_bytes, tensor_metadata

SERVICER = "tritonclient.grpc.service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server"
STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT, 503: grpc.StatusCode.UNAVAILABLE,
}  # fmt: skip
CONTENTS = {
    "FP32": "fp32_contents", "FP64": "fp64_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def status(http_status: int) -> grpc.StatusCode:
    """The gRPC code for what HTTP answers with ``http_status``."""
    return STATUS.get(http_status, grpc.StatusCode.INTERNAL)


def _typed(t: Any, spec: InputSpec, where: str) -> Any:
    """``contents`` of the tensor's datatype -> what `v2_tensor` takes as ``data``."""
    name = CONTENTS.get(t.datatype)
    if name is None:
        raise BadInput(f"{where}.datatype {t.datatype!r}: expected one of {', '.join(CONTENTS)}")
    values = getattr(t.contents, name)
    if t.datatype != "BYTES":
        return np.asarray(values, dtype=np.float64 if "FP" in t.datatype else np.int64)
    if spec.kind == "text":
        try:
            return [b.decode("utf-8") for b in values]
        except UnicodeDecodeError:
            raise BadInput(f"{where}: a text is not valid UTF-8") from None
    return [base64.b64encode(b).decode("ascii") for b in values]


def decode(req: pb.ModelInferRequest, spec: InputSpec, limit: int) -> InferRequest:
    if len(req.inputs) != 1 or req.inputs[0].name != "input":
        raise BadInput(f"inputs: send exactly one tensor named 'input', got "
                       f"{[t.name for t in req.inputs]}")  # fmt: skip
    t, where = req.inputs[0], "inputs[0]"
    shape = [int(s) for s in t.shape]
    if len(req.raw_input_contents) > 1:
        raise BadInput(f"{len(req.raw_input_contents)} raw input contents for one input")
    if req.raw_input_contents:
        data = binary_data(req.raw_input_contents[0], shape, t.datatype, spec, where)
    else:
        data = _typed(t, spec, where)
    names = check_outputs([o.name for o in req.outputs]) if req.outputs else list(OUTPUT_NAMES)
    x = v2_tensor(shape, t.datatype, data, spec, limit)
    return InferRequest(x, req.id or None, names)


def encode(req: InferRequest, pred: Prediction) -> pb.ModelInferResponse:
    resp = pb.ModelInferResponse(model_name=pred.model, id=req.id or "")
    for o, t in pred.tensors(req.outputs):
        resp.outputs.add(name=o.name, datatype=o.datatype, shape=list(t.shape))
        resp.raw_output_contents.append(raw_bytes(t, o.datatype))
    return resp


def metadata(name: str, spec: InputSpec, classes: int) -> pb.ModelMetadataResponse:
    m = tensor_metadata(spec, classes)
    return pb.ModelMetadataResponse(
        name=name, versions=[], platform="shiftray-pytorch",
        inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in m["inputs"]],
        outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in m["outputs"]],
    )  # fmt: skip
