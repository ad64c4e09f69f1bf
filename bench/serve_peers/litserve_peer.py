"""The predictor behind LitServe (one API server process, one inference worker), on the Open
Inference Protocol V2 JSON route. ``--max-batch-size`` > 1 turns LitServe's batching on
(``--batch-timeout`` seconds to fill a batch). Run with the peers' venv (serve_load.py).

    .venv-peers/bin/python bench/serve_peers/litserve_peer.py --run-dir RUN_DIR --name lenet \
        --port 8002 [--threads 1] [--max-batch-size 8 --batch-timeout 0.005]
"""

from __future__ import annotations

import sys
from pathlib import Path

import litserve as ls
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oip import load_predictor, outputs, peer_args, tensor  # noqa: E402


class V2API(ls.LitAPI):
    """decode: V2 JSON -> (1, ...) array; predict: the predictor; encode: V2 outputs."""

    def __init__(self, args) -> None:
        super().__init__(max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout,
                         api_path=f"/v2/models/{args.name}/infer")  # fmt: skip
        self.args = args

    def setup(self, device) -> None:
        self.predictor = load_predictor(self.args.run_dir, self.args.threads)

    def decode_request(self, request):
        return tensor(request)

    def batch(self, inputs):  # each input already has its batch axis
        return np.concatenate(inputs)

    def predict(self, x):
        return self.predictor(x)

    def unbatch(self, output):
        return [outputs(self.predictor.classes, output, slice(i, i + 1))
                for i in range(len(output.index))]  # fmt: skip

    def encode_response(self, output):
        if not isinstance(output, list):  # not batched: the prediction itself
            output = outputs(self.predictor.classes, output)
        return {"model_name": self.args.name, "outputs": output}


def main() -> None:
    args = peer_args(__doc__)
    server = ls.LitServer(V2API(args), accelerator="cpu", devices=1, workers_per_device=1,
                          timeout=60)  # fmt: skip
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, log_level="warning",
               generate_client_file=False, access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
