"""The wire protocols without a server: requests built by the client production teams use for
the Open Inference Protocol (tritonclient's HTTP and gRPC modules, binary tensors included)
decode to the model's input, and our encoded responses parse back in tritonclient to the very
tensors of the `Prediction`."""

import numpy as np
import orjson
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from shiftray.serving.inputs import BadInput, InputSpec
from shiftray.serving.predictor import OUTPUTS, Prediction
from shiftray.serving.protocols import kserve_v1, oip_grpc, oip_v2
from shiftray.serving.protocols.common import InferRequest
from tritonclient.grpc import _utils as grpc_utils

IMAGE = InputSpec("image", (1, 4, 4), "stretch")
VECTOR = InputSpec("vector", (3,))


def prediction(n: int = 2, signals: bool = True) -> Prediction:
    rng = np.random.default_rng(0)
    p = rng.random((n, 3)).astype(np.float32)
    p /= p.sum(1, keepdims=True)
    score = rng.random(n).astype(np.float32) if signals else None
    return Prediction("m", ("cat", "dog", "owl"), p, p.argmax(1), score, score)


def test_v1_decodes_instances_and_encodes_one_object_per_instance():
    x = kserve_v1.decode(orjson.dumps({"instances": [[1, 2, 3], [4, 5, 6.5]]}), VECTOR, 8)
    assert x.dtype == np.float32 and x.tolist() == [[1, 2, 3], [4, 5, 6.5]]
    pred = prediction(signals=False)
    rows = orjson.loads(kserve_v1.encode(pred))["predictions"]
    assert [r["label"] for r in rows] == list(pred.label) and rows[0]["shift_score"] is None
    assert list(rows[0]) == [o.name for o in OUTPUTS]
    np.testing.assert_allclose([r["probabilities"] for r in rows], pred.probabilities)
    for body, message in ((b"[1]", "expected a JSON object"), (b'{"inputs": []}', "missing"),
                          (b'{"instances": [], "x": 1}', "unknown field"),
                          (b'{"instances": {"a": 1}}', "expected a list"),
                          (b'{"instances": [[1e300, 0, 0]]}', "instances")):  # fmt: skip
        with pytest.raises(BadInput, match=message) as e:
            kserve_v1.decode(body, VECTOR, 8)
        assert 400 <= e.value.status < 500


def _http_body(x: np.ndarray, binary: bool, outputs=None) -> tuple[bytes, str | None]:
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    body, length = th.InferenceServerClient.generate_request_body([inp], outputs=outputs)
    return body, None if length is None else str(length)


@pytest.mark.parametrize("binary", [False, True])
def test_v2_requests_from_tritonclient_decode_json_and_binary(binary):
    x = np.random.default_rng(1).random((3, 1, 4, 4), dtype=np.float32)
    body, length = _http_body(x, binary, [th.InferRequestedOutput("index", binary_data=False)])
    infer = oip_v2.decode(body, length, IMAGE, 8)
    np.testing.assert_array_equal(infer.x, x)
    assert infer.outputs == ["index"] and infer.binary == set()


def test_v2_binary_outputs_parse_back_in_tritonclient():
    pred = prediction(3)
    infer = InferRequest(np.zeros((3, 3), np.float32), "r1", [o.name for o in OUTPUTS],
                         {"label", "probabilities", "shift_score"})  # fmt: skip
    body, headers = oip_v2.encode(infer, pred)
    assert headers["content-type"] == "application/octet-stream"
    result = th.InferenceServerClient.parse_response_body(
        body, header_length=int(headers[oip_v2.HEADER_LENGTH]))  # fmt: skip
    np.testing.assert_array_equal(result.as_numpy("probabilities"), pred.probabilities)
    np.testing.assert_array_equal(result.as_numpy("index"), pred.index)  # JSON, not binary
    assert [b.decode() for b in result.as_numpy("label")] == list(pred.label)
    assert result.get_response()["id"] == "r1"


def test_v2_binary_requests_that_do_not_add_up_are_refused():
    x = np.zeros((1, 1, 4, 4), np.float32)
    body, length = _http_body(x, True)
    cases = [(body[:-4], length, "binary_data_size"), (body + b"xx", length, "binary_data_size"),
             (body, "0", "Inference-Header-Content-Length"), (body, "abc", "Length"),
             (body, str(len(body) + 1), "Length")]  # fmt: skip
    for b, n, message in cases:
        with pytest.raises(BadInput, match=message):
            oip_v2.decode(b, n, IMAGE, 8)
    head = orjson.loads(body[: int(length)])
    head["inputs"][0]["data"] = [0.0] * 16  # both data and binary
    with pytest.raises(BadInput, match="binary_data_size"):
        oip_v2.decode(orjson.dumps(head) + body[int(length) :], str(len(orjson.dumps(head))),
                      IMAGE, 8)  # fmt: skip


@pytest.mark.parametrize("doc, message", [
    ({"inputs": []}, "exactly one tensor"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, "named"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32"}]}, "no data"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1e300, 0, 0]}]}, "inputs"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
      "outputs": [{"name": "logits"}]}, "available are"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
      "id": 7}, "id"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3],
                  "extra": 1}]}, "unknown field"),
])  # fmt: skip
def test_v2_json_mistakes_are_422_naming_the_field(doc, message):
    with pytest.raises(BadInput, match=message) as e:
        oip_v2.decode(orjson.dumps(doc), None, VECTOR, 8)
    assert e.value.status == 422


def _grpc_request(x: np.ndarray, outputs=None):
    inp = tg.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return grpc_utils._get_inference_request("m", [inp], "", "q", outputs, 0, False, False, 0,
                                             None, None)  # fmt: skip


def test_grpc_requests_from_tritonclient_decode_and_responses_parse_back():
    x = np.random.default_rng(2).random((2, 3), dtype=np.float32)
    infer = oip_grpc.decode(_grpc_request(x), VECTOR, 8)
    np.testing.assert_array_equal(infer.x, x)
    assert infer.id == "q"
    pred = prediction(2)
    result = tg.InferResult(oip_grpc.encode(infer, pred))
    np.testing.assert_array_equal(result.as_numpy("probabilities"), pred.probabilities)
    np.testing.assert_array_equal(result.as_numpy("shift_score"), pred.shift_score)
    assert [b.decode() for b in result.as_numpy("label")] == list(pred.label)
    only = oip_grpc.decode(_grpc_request(x, [tg.InferRequestedOutput("index")]), VECTOR, 8)
    assert [o.name for o in oip_grpc.encode(only, pred).outputs] == ["index"]


def test_grpc_mistakes_map_to_status_codes():
    import grpc

    with pytest.raises(BadInput, match="shape") as e:
        oip_grpc.decode(_grpc_request(np.zeros((2, 4), np.float32)), VECTOR, 8)
    assert oip_grpc.status(e.value.status) == grpc.StatusCode.INVALID_ARGUMENT
    assert oip_grpc.status(404) == grpc.StatusCode.NOT_FOUND
    assert oip_grpc.status(503) == grpc.StatusCode.UNAVAILABLE
    assert oip_grpc.status(401) == grpc.StatusCode.UNAUTHENTICATED


def test_a_new_output_field_reaches_every_protocol_from_outputs_alone(monkeypatch):
    """Adding an output touches the predictor only: the encoders write what OUTPUTS declares."""
    from shiftray.serving import predictor
    from shiftray.serving.protocols import common

    extra = predictor.Output("margin", "FP32", "top-1 minus top-2 probability")
    monkeypatch.setattr(predictor, "OUTPUTS", (*OUTPUTS, extra))
    for module in (kserve_v1, oip_v2, common):
        monkeypatch.setattr(module, "OUTPUTS", predictor.OUTPUTS, raising=False)
    pred = prediction(2)
    object.__setattr__(pred, "margin", np.array([0.5, 0.25], np.float32))
    assert orjson.loads(kserve_v1.encode(pred))["predictions"][1]["margin"] == 0.25
    infer = InferRequest(np.zeros((2, 3), np.float32), None, ["margin"])
    assert orjson.loads(oip_v2.encode(infer, pred)[0])["outputs"][0]["data"] == [0.5, 0.25]
    assert oip_grpc.encode(infer, pred).outputs[0].name == "margin"
