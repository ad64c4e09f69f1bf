"""The wire protocols, one module each, each a ``decode`` (request -> the model's input) and an
``encode`` (`shiftray.serving.predictor.Prediction` -> response):

- `kserve_v1`: KServe V1 ``:predict``, ``{"instances": [...]}`` -> ``{"predictions": [...]}``;
- `oip_v2`: the Open Inference Protocol over HTTP/REST, JSON tensors and the binary tensor
  extension (``Inference-Header-Content-Length``: a JSON header, then raw little-endian tensors);
- `oip_grpc`: the Open Inference Protocol over gRPC (``inference.GRPCInferenceService``, the
  service KServe and Triton share; messages from ``tritonclient.grpc.service_pb2``).

Decoding checks everything about the payload (`shiftray.serving.inputs` checks each instance
against the model's input contract) and raises `BadInput` with a status and a message a person
can act on; nothing here touches the model.
"""
