"""The baseline: the predictor behind one plain FastAPI + uvicorn process, the way a user writes
it (no batching; the model is called on the event loop, no thread hop; access log off).

    python bench/serve_peers/bare.py --run-dir RUN_DIR --name lenet --port 8001 [--threads 1]
"""

import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oip import load_predictor, outputs, peer_args, tensor  # noqa: E402


def main() -> None:
    args = peer_args(__doc__)
    predictor = load_predictor(args.run_dir, args.threads)
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> dict:
        body = await request.json()
        out = predictor(tensor(body))
        return {
            "model_name": name,
            "id": body.get("id"),
            "outputs": outputs(predictor.classes, out),
        }

    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
