"""The predictor as a `kserve.Model` behind KServe's `ModelServer` (one uvicorn worker), on its
native Open Inference Protocol V2 route ``/v2/models/{name}/infer``. gRPC, latency logging and
the access log are off (as in the other servers). Run with the peers' venv (serve_load.py).

    KSERVE_LOGLEVEL=WARNING .venv-peers/bin/python bench/serve_peers/kserve_peer.py \
        --run-dir RUN_DIR --name lenet --port 8003 [--threads 1]
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("KSERVE_LOGLEVEL", "WARNING")  # read when kserve is imported
import kserve  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oip import load_predictor, outputs, peer_args  # noqa: E402


class PeerModel(kserve.Model):
    def __init__(self, name: str, run_dir: str, threads: int) -> None:
        super().__init__(name)
        self.run_dir, self.threads = run_dir, threads

    def load(self) -> bool:
        self.predictor = load_predictor(self.run_dir, self.threads)
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        out = self.predictor(payload.inputs[0].as_numpy())
        tensors = [InferOutput(t["name"], t["shape"], t["datatype"], t["data"])
                   for t in outputs(self.predictor.classes, out)]  # fmt: skip
        return InferResponse(
            response_id=payload.id or "", model_name=self.name, infer_outputs=tensors
        )


def main() -> None:
    args = peer_args(__doc__)
    model = PeerModel(args.name, args.run_dir, args.threads)
    model.load()
    server = kserve.ModelServer(http_port=args.port, enable_grpc=False, workers=1,
                                enable_latency_logging=False)  # fmt: skip
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # KServe sets it to INFO
    server.start([model])


if __name__ == "__main__":
    main()
