"""A replica's models: the deployment (`shiftray.serving.routes.ModelServer`) is its own HTTP and
gRPC ingress and holds them, so a request crosses no hop between being received and predicted.

- several models per replica, loaded on first use, least recently used unloaded past
  ``max_models_per_replica`` (``serve.multiplexed``);
- dynamic batching per replica (``serve.batch``, greedy: with ``batch_wait_timeout_s`` 0 a batch
  is whatever queued while the previous one ran, so a lone request waits for nothing); a batch
  never mixes models: it is split by the model each request names before the forward pass;
- the drift monitor (`shiftray.serving.monitor`) sees every answered input's features, off the
  request path, and exports Prometheus metrics;
- the deployment and its routes: `shiftray.serving.routes` (KServe V1, the Open Inference
  Protocol over HTTP and gRPC), decoding and encoding in `shiftray.serving.protocols`.

With HAProxy as the ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``, `shiftray.serving.local`), HAProxy
forwards each connection straight to a replica's own HTTP server: requests are balanced by
connections, not routed by model, so with several replicas each loads the models it is asked
for (up to its limit).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import weakref
from collections import defaultdict
from typing import Any

import numpy as np
from ray import serve
from ray.serve.metrics import Counter, Gauge

from shiftray.serving.args import AppArgs
from shiftray.serving.catalog import ModelCard, inspect_model
from shiftray.serving.http import ApiError
from shiftray.serving.inputs import BadInput
from shiftray.serving.monitor import DriftMonitor
from shiftray.serving.predictor import NonFiniteOutput, Prediction, Predictor

INLINE_S = 0.004  # forward passes shorter than this run on the event loop


class ModelUnavailable(RuntimeError):
    """The model cannot answer (its files failed to load): 503."""


class Models:
    """The replica's models: cards, loading, batching, the drift monitor, metrics. The
    deployment (`shiftray.serving.routes.ModelServer`) holds one and puts the protocols on top."""

    def __init__(self, args: AppArgs, paths: dict[str, str]) -> None:
        import torch

        self.args, self.paths = args, paths
        torch.set_num_threads(args.threads or max(1, int(os.environ.get("OMP_NUM_THREADS", 1))))
        self.cards: dict[str, ModelCard] = {n: inspect_model(n, p) for n, p in paths.items()}
        self.monitor = DriftMonitor(args.drift_window)
        self.loaded: weakref.WeakValueDictionary[str, Predictor] = weakref.WeakValueDictionary()
        self.drift_task: asyncio.Task | None = None
        self.pass_s: dict[str, float] = {}  # per model: seconds a forward pass takes (average)
        self.running = 0  # forward passes under way (batched or not)
        self.waiting = 0  # predictions asked for and not answered yet
        self.replica = serve.get_replica_context().replica_tag

        async def load(name: str) -> Predictor:  # LRU-cached per replica by serve.multiplexed
            return await self._load_model(name)

        self._load = serve.multiplexed(max_num_models_per_replica=args.max_models_per_replica)(load)
        self._batched.set_max_batch_size(args.max_batch_size)
        self._batched.set_batch_wait_timeout_s(args.batch_wait_timeout_s)
        self._metrics()

    def _metrics(self) -> None:
        tags = ("model",)
        self.m_requests = Counter("shiftray_predictions", "inputs answered", tag_keys=tags)
        self.m_mmd = Gauge("shiftray_drift_mmd2", "MMD^2 of the window", tag_keys=tags)
        self.m_p = Gauge("shiftray_drift_p_value", "drift test p-value", tag_keys=tags)
        self.m_mean = Gauge("shiftray_window_shift_score", "window mean", tag_keys=tags)

    # -- lookups -----------------------------------------------------------------------------
    def card(self, name: str, ready: bool = True) -> ModelCard:
        card = self.cards.get(name)
        if card is None:  # a request names a model; it is never joined to a path
            raise ApiError(404, f"no model named {name!r}; models: {sorted(self.cards)}")
        if ready and not card.ready:
            raise ApiError(503, f"model {name!r} is not ready: {card.reason}")
        return card

    async def _load_model(self, name: str) -> Predictor:
        try:
            model = await asyncio.to_thread(Predictor, self.paths[name], self.args.device,
                                            name=name)  # fmt: skip
        except Exception as e:
            raise ModelUnavailable(f"model {name!r} failed to load: {type(e).__name__}: {e}") from e
        self.loaded[name] = model
        self.monitor.forget(name)
        return model

    # -- prediction --------------------------------------------------------------------------
    async def predict(self, name: str, x: np.ndarray) -> Prediction:
        """``x`` (already checked against the model's input contract) -> its `Prediction`;
        503 when the model cannot answer in ``request_timeout_s``, 422 for a non-finite output.

        A request alone in the replica is answered at once (a batch of one, without the batch
        queue's hops); concurrent requests are batched."""
        if self.drift_task is None or self.drift_task.done():
            self.drift_task = asyncio.create_task(self._drift_loop())
        timeout = self.args.request_timeout_s
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):
                if self.waiting == 1 and not self.running:  # alone
                    (answer,) = await self._answer([(name, x)])
                else:
                    answer = await self._batched((name, x))
        except TimeoutError:
            raise ApiError(503, f"model {name!r} did not answer in {timeout} s") from None
        finally:
            self.waiting -= 1
        if isinstance(answer, ModelUnavailable):
            raise ApiError(503, str(answer))
        try:
            answer.check_finite()
        except NonFiniteOutput as e:
            raise BadInput(f"instances {e.rows[:10]}: {e}; the input is outside what the model "
                           "can answer") from None  # fmt: skip
        return answer

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)  # set from AppArgs in __init__
    async def _batched(self, items: list[tuple[str, np.ndarray]]) -> list[Any]:
        return await self._answer(items)

    async def _answer(self, items: list[tuple[str, np.ndarray]]) -> list[Any]:
        """One forward pass per model named in ``items`` (a batch never mixes models); each
        item's answer, or the `ModelUnavailable` of its model."""
        by_model: dict[str, list[int]] = defaultdict(list)
        for i, (name, _) in enumerate(items):
            by_model[name].append(i)
        answers: list[Any] = [None] * len(items)
        self.running += 1
        try:
            for name, idx in by_model.items():
                try:
                    model = await self._load(name)
                except ModelUnavailable as e:
                    for i in idx:
                        answers[i] = e
                    continue
                x = np.concatenate([items[i][1] for i in idx])
                pred = dataclasses.replace(await self._forward(name, model, x),
                                           replica=self.replica)  # fmt: skip
                self._observe(name, pred)
                bounds = np.cumsum([0] + [len(items[i][1]) for i in idx])
                for i, start, stop in zip(idx, bounds[:-1], bounds[1:], strict=True):
                    answers[i] = pred.rows(start, stop)
        finally:
            self.running -= 1
        return answers

    async def _forward(self, name: str, model: Predictor, x: np.ndarray) -> Prediction:
        """The forward pass: on the event loop when this model's passes are short (handing a
        short pass to a thread costs more than it saves: the GIL goes back and forth between the
        thread and the loop), else in a thread, so the loop reads the next requests meanwhile."""

        def timed() -> Prediction:
            start = time.perf_counter()
            pred = model(x)
            took = time.perf_counter() - start  # the pass itself, not the hop to a thread
            last = self.pass_s.get(name)
            self.pass_s[name] = took if last is None else 0.8 * last + 0.2 * took
            return pred

        if self.pass_s.get(name, float("inf")) > INLINE_S:
            return await asyncio.to_thread(timed)
        return timed()

    def _observe(self, name: str, pred: Prediction) -> None:
        """Count and record finite answers (a non-finite one never enters the drift window)."""
        ok = np.isfinite(pred.probabilities).all(1)
        if pred.shift_score is not None:
            ok &= np.isfinite(pred.shift_score)
        if not ok.all():
            pred = pred.take(np.flatnonzero(ok))
        self.m_requests.inc(len(pred), tags={"model": name})
        self.monitor.add(name, pred.features, pred.shift_score, pred.target_probability)

    # -- drift -------------------------------------------------------------------------------
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
        return self.monitor.summary(name).as_dict() | {"replica": self.replica}

    def shared_bases(self) -> dict[str, Any]:
        """The LoRA bases this replica holds once for their adapters (fingerprint -> bytes)."""
        from shiftray.serving.bases import SHARED

        return {"bases": SHARED.held(), "loaded": sorted(self.loaded), "replica": self.replica}

    def check_health(self) -> None:
        task = self.drift_task
        if task is not None and task.done() and not task.cancelled() and task.exception():
            raise RuntimeError(f"the drift monitor stopped: {task.exception()!r}")
