"""The model deployment: several models per replica (``@serve.multiplexed``, least recently used
leaves), dynamic batching (``@serve.batch``), the drift monitor and its metrics.

A batch never mixes models: Ray 2.60 splits a batch by multiplexed model id, and the batch
handler here groups by the model name each request carries as well, so a request is answered by
the model it names even if that split ever regressed (a Ray bug once mixed them).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections import defaultdict
from typing import Any

import numpy as np
from ray import serve
from ray.serve.metrics import Counter, Gauge, Histogram

from shiftray.serving.args import AppArgs
from shiftray.serving.monitor import DriftMonitor
from shiftray.serving.predictor import Outputs, Predictor


class ModelUnavailable(RuntimeError):
    """The model cannot answer (its files failed to load): the ingress answers 503."""


def _answer(name: str, out: Outputs, batch_rows: int) -> dict[str, Any]:
    return {
        "model": name, "probabilities": out.probabilities, "index": out.index,
        "shift_score": out.shift_score, "target_probability": out.target_probability,
        "batch_rows": batch_rows, "replica": serve.get_replica_context().replica_tag,
    }  # fmt: skip


def model_server(args: AppArgs):
    """The deployment class, with the batch and multiplexing limits of ``args``."""

    @serve.deployment(
        name="ModelServer",
        max_ongoing_requests=2 * args.max_batch_size,  # one batch running, the next filling
        health_check_period_s=10,
        health_check_timeout_s=30,
    )
    class ModelServer:
        def __init__(self, args: AppArgs, paths: dict[str, str]) -> None:
            import torch

            self.args, self.paths = args, paths
            torch.set_num_threads(args.threads or max(1, int(os.environ.get("OMP_NUM_THREADS", 1))))
            self.monitor = DriftMonitor(args.drift_window)
            self.loaded: weakref.WeakValueDictionary[str, Predictor] = (
                weakref.WeakValueDictionary()  # what multiplexing keeps loaded (LRU evicts)
            )
            self.drift_task: asyncio.Task | None = None
            tags = ("model",)
            self.m_requests = Counter("shiftray_predictions", "inputs answered", tag_keys=tags)
            self.m_shift = Histogram("shiftray_shift_score", "per-input shift score",
                                     boundaries=[0.5, 0.8, 0.9, 0.95, 0.99], tag_keys=tags)  # fmt: skip
            self.m_mmd = Gauge("shiftray_drift_mmd2", "MMD^2 of the window", tag_keys=tags)
            self.m_p = Gauge("shiftray_drift_p_value", "drift test p-value", tag_keys=tags)
            self.m_mean = Gauge("shiftray_window_shift_score", "window mean", tag_keys=tags)

        @serve.multiplexed(max_num_models_per_replica=args.max_models_per_replica)
        async def get_model(self, name: str) -> Predictor:
            if name not in self.paths:
                raise ModelUnavailable(f"no model named {name!r}")
            try:
                model = await asyncio.to_thread(Predictor, self.paths[name], self.args.device)
            except Exception as e:
                raise ModelUnavailable(
                    f"model {name!r} failed to load: {type(e).__name__}: {e}"
                ) from e
            self.loaded[name] = model
            self.monitor.forget(name)
            return model

        async def predict(self, name: str, x: np.ndarray) -> dict[str, Any]:
            if self.drift_task is None or self.drift_task.done():
                self.drift_task = asyncio.create_task(self._drift_loop())
            answer = await self._batched((name, x))
            if isinstance(answer, Exception):  # this request's model failed to load
                raise answer
            return answer

        @serve.batch(max_batch_size=args.max_batch_size,
                     batch_wait_timeout_s=args.batch_wait_timeout_s)  # fmt: skip
        async def _batched(self, items: list[tuple[str, np.ndarray]]) -> list[dict[str, Any]]:
            by_model: dict[str, list[int]] = defaultdict(list)
            for i, (name, _) in enumerate(items):
                by_model[name].append(i)
            answers: list[Any] = [None] * len(items)
            for name, idx in by_model.items():
                try:
                    model = await self.get_model(name)
                except ModelUnavailable as e:
                    for i in idx:
                        answers[i] = e
                    continue
                x = np.concatenate([items[i][1] for i in idx])
                out = await asyncio.to_thread(model, x)
                self._observe(name, out)
                start = 0
                for i in idx:
                    n = len(items[i][1])
                    answers[i] = _answer(name, out.rows(start, start + n), len(x))
                    start += n
            return answers

        def _observe(self, name: str, out: Outputs) -> None:
            tags = {"model": name}
            self.m_requests.inc(len(out.index), tags=tags)
            if out.shift_score is not None:
                for s in out.shift_score.tolist():
                    self.m_shift.observe(s, tags=tags)
            self.monitor.add(name, out.features, out.shift_score, out.target_probability)

        async def _drift_loop(self) -> None:
            while True:
                await asyncio.sleep(self.args.drift_every_s)
                for name, model in list(self.loaded.items()):
                    res = await asyncio.to_thread(self.monitor.update, name, model.reference)
                    if res is None:
                        continue
                    tags = {"model": name}
                    if res.mean_shift_score is not None:
                        self.m_mean.set(res.mean_shift_score, tags=tags)
                    if res.mmd2 is not None:
                        self.m_mmd.set(res.mmd2, tags=tags)
                        self.m_p.set(res.p_value, tags=tags)

        async def drift(self, name: str) -> dict[str, Any]:
            model = self.loaded.get(name)
            if model is not None:  # the latest window, tested now if it changed
                await asyncio.to_thread(self.monitor.update, name, model.reference)
            return self.monitor.summary(name).as_dict() | {
                "replica": serve.get_replica_context().replica_tag
            }

        def shared_bases(self) -> dict[str, Any]:
            """The LoRA bases this replica holds once for their adapters (fingerprint -> bytes)."""
            from shiftray.serving.bases import SHARED

            return {"bases": SHARED.held(), "loaded": sorted(self.loaded),
                    "replica": serve.get_replica_context().replica_tag}  # fmt: skip

        def check_health(self) -> None:
            task = self.drift_task
            if task is not None and task.done() and not task.cancelled() and task.exception():
                raise RuntimeError(f"the drift monitor stopped: {task.exception()!r}")

    return ModelServer
