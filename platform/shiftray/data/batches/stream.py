"""Streaming the training splits from Parquet shards with Ray Data (``data.stream.enabled``).

For data that does not fit one machine's memory. The driver opens only the shards' footers
(row counts) and the target test split; each domain's training shards become a
``ray.data.read_parquet`` dataset that Ray Train splits across the workers
(``ray.train.get_dataset_shard``, equal shares, order preserved). Each worker decodes what it
reads: encoded images with `shiftray.data.images.decode_batch` (batched nvjpeg on a GPU worker,
a thread pool on CPU), float inputs by reshaping the Arrow buffer.

Lockstep and deterministic epochs: every worker gets ``R = rows // world`` rows per epoch and
``B = R // batch`` batches (the partial batch dropped), so step ``s`` is batch ``s mod B`` of
epoch ``s div B`` on every worker, for both domains (the smaller one wraps more often). Epoch
``e`` reads the shards in file order, permuting windows of ``shuffle_buffer`` rows seeded by
(seed, domain, rank, e). The batch a step gets is therefore a pure function of the step, as in
the in-memory `DomainStream`: a resumed run re-opens epoch ``s div B`` and skips ``s mod B``
batches, and draws exactly the batches the uninterrupted run drew.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from shiftray.config.schema import JobSpec
from shiftray.data.arrays import DomainData, UnlabelledArrays
from shiftray.data.batches.base import Augment, DABatch, augmented_batch
from shiftray.data.images import EncodedImages, decode_batch
from shiftray.data.loading import labelled
from shiftray.data.normalize import fit_normalization
from shiftray.data.readers.parquet import ParquetDomains
from shiftray.data.table import shard_paths, table_meta
from shiftray.errors import UserInputError
from shiftray.registry import METHODS


@dataclass(frozen=True)
class StreamInfo:
    """What the workers need to know about the streamed domains (small, picklable)."""

    source_rows: int  # 0 when the method is source-free (the source is never opened)
    target_rows: int
    input_shape: tuple[int, ...]
    encoded: bool  # input holds encoded image bytes
    domains: tuple[str, ...] = ("source", "target")  # the streamed ones ("target" source-free)
    paths: dict[str, list[str]] = field(default_factory=dict, compare=False)  # shards by domain


def _paths(root: str, domain: str) -> list[str]:
    paths = shard_paths(root, domain, "train")
    if not paths:
        raise FileNotFoundError(
            f"no parquet shards {Path(root) / domain}/train[-NNNNN].parquet to stream; write them "
            f"with `shiftray data prepare BENCHMARK --out {root} --shard-rows N`"
        )
    return [str(p) for p in paths]


def _check_labelled(domain: str, paths: list[str]) -> None:
    """A streamed source must be labelled on every row (the stream cannot leave rows out without
    breaking the lockstep row counts): checked from the Parquet footers' statistics."""
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        col = meta.schema.to_arrow_schema().get_field_index("label")
        for g in range(meta.num_row_groups):
            st = meta.row_group(g).column(col).statistics
            if st is None or not st.has_min_max or st.null_count is None:  # e.g. an empty file
                labels = pq.read_table(path, columns=["label"]).column("label")
                bad = labels.null_count > 0 or (len(labels) > 0 and pc.min(labels).as_py() < 0)
            else:
                bad = st.null_count > 0 or st.min < 0
            if bad:
                raise UserInputError(
                    f"data.source={domain!r}: {path} has unlabelled rows (null or -1 labels); a "
                    "streamed source must be labelled on every row: write its labelled rows as "
                    "a domain of their own, or set data.stream.enabled: false (in memory, "
                    "unlabelled source rows are left out)"
                )


def _rows(paths: list[str]) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def load_stream_data(spec: JobSpec) -> tuple[DomainData, dict[str, list[str]]]:
    """DomainData for a streamed job (source / target training splits empty, described by
    ``stream``; the target test split in memory) and the shard paths per domain."""
    root = ParquetDomains.Options.model_validate(spec.data.options).path
    paths = {"target": _paths(root, spec.data.target)}
    if METHODS.get(spec.method.name).uses_source:
        paths["source"] = _paths(root, spec.data.source)
        _check_labelled(spec.data.source, paths["source"])
    schema = pq.read_schema(paths["target"][0])
    meta = schema.metadata or {}
    try:
        shape, classes = table_meta(schema.empty_table())
    except ValueError as e:
        raise UserInputError(f"{paths['target'][0]}: {e}") from None
    info = StreamInfo(
        source_rows=_rows(paths["source"]) if "source" in paths else 0,
        target_rows=_rows(paths["target"]),
        input_shape=shape,
        encoded=meta.get(b"shiftray.input_encoding") == b"image",
        domains=tuple(sorted(paths)),
        paths=paths,
    )
    opts = ParquetDomains.Options.model_validate(spec.data.options)
    # the test split stays encoded in memory; evaluation decodes a batch at a time
    test = labelled(ParquetDomains.read(spec.data.target, "test", opts, lazy_images=True))
    if isinstance(test.x, EncodedImages):
        test.x.threads = spec.data.stream.decode_threads
    empty = UnlabelledArrays(np.zeros((0, *shape), np.float32), spec.data.target, "train")
    norm = None
    if spec.data.normalize != "none":
        if info.encoded:
            raise UserInputError("data.normalize is for feature vectors; these shards hold images")
        files = [p for domain in sorted(paths) for p in paths[domain]]
        norm = fit_normalization(spec.data.normalize, _input_chunks(files, shape))
    data = DomainData(None, empty, test, classes, shape, stream=info, normalization=norm)
    return data, paths


def _input_chunks(files: list[str], shape: tuple[int, ...]):
    """The input column of the shards, one Parquet record batch at a time, as (rows, *shape)."""
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(columns=["input"], batch_size=4096):
            flat = batch.column(0).flatten().to_numpy(zero_copy_only=False)
            yield flat.reshape(len(batch), *shape)


def make_datasets(paths: dict[str, list[str]]) -> dict[str, Any]:
    """One Ray dataset per domain, reading the shards in file order: the source's inputs and
    labels, the target's inputs only (its label column is never read)."""
    import ray.data

    out = {}
    for name, p in paths.items():
        columns = ["input", "label"] if name == "source" else ["input"]
        ds = ray.data.read_parquet(p, columns=columns, shuffle=None)
        ds.context.execution_options.preserve_order = True  # rows in file order, every epoch
        out[name] = ds
    return out


def data_config() -> Any:
    """Equal, order-preserving splits: the same rows reach the same worker in the same order."""
    from ray.train import DataConfig

    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return DataConfig(execution_options=options)


class ShardStream:
    """One domain's batches on one worker, as a pure function of the step (see module doc)."""

    def __init__(
        self, shard: Any, name: str, rows: int, batch_size: int, seed: int, rank: int,
        world: int, shuffle_buffer: int, prefetch: int,
    ) -> None:  # fmt: skip
        per_worker = rows // world
        if per_worker < batch_size:
            raise UserInputError(
                f"streamed domain {name!r}: {rows} rows over {world} worker(s) gives {per_worker} "
                f"per worker, fewer than the per-worker batch of {batch_size}; lower train.batch_size"
            )
        self.shard, self.name, self.batch_size = shard, name, batch_size
        self.seed, self.rank, self.buffer, self.prefetch = seed, rank, shuffle_buffer, prefetch
        self.batches_per_epoch = per_worker // batch_size
        self._it: Iterator[pa.Table] | None = None
        self._next_step: int | None = None

    def _open(self, epoch: int) -> Iterator[pa.Table]:
        """Epoch ``epoch``'s batches: the rows in file order, cut into windows of about
        ``shuffle_buffer`` rows, each window permuted by the next draws of an RNG seeded by
        (seed, domain, rank, epoch), then into batches (the epoch's last partial batch dropped).
        Depends only on the row order, never on how Ray Data blocks or prefetches it."""
        rng = np.random.default_rng([self.seed, sum(map(ord, self.name)), self.rank, epoch])
        window = max(self.batch_size, self.buffer // self.batch_size * self.batch_size)
        carry: pa.Table | None = None
        for chunk in self.shard.iter_batches(
            batch_size=window, batch_format="pyarrow", prefetch_batches=self.prefetch
        ):
            if self.buffer:
                chunk = chunk.take(rng.permutation(len(chunk)))
            if carry is not None:
                chunk = pa.concat_tables([carry, chunk])
            n_full = len(chunk) // self.batch_size * self.batch_size
            for i in range(0, n_full, self.batch_size):
                yield chunk.slice(i, self.batch_size)
            carry = chunk.slice(n_full) if n_full < len(chunk) else None

    def close(self) -> None:
        """Stop reading (closes the epoch's Ray Data iterator while Ray is still up)."""
        if self._it is not None:
            self._it.close()
            self._it, self._next_step = None, None

    def batch(self, step: int) -> pa.Table:
        epoch, k = divmod(step, self.batches_per_epoch)
        try:
            if self._next_step != step or k == 0:  # a new epoch, or a jump (resume): open, skip
                self._it = self._open(epoch)
                for _ in range(k):
                    next(self._it)
            self._next_step = step + 1
            return next(self._it)
        except StopIteration:
            self._it, self._next_step = None, None
            raise UserInputError(
                f"streamed domain {self.name!r} ended before batch {k + 1} of its "
                f"{self.batches_per_epoch} this epoch: the shards changed while training (or "
                "since the checkpoint was written), or the split is uneven"
            ) from None


class StreamPairing:
    """`Pairing` for streamed data: source and target shards -> `DABatch` (target labels are
    dropped here, unread). ``decode_device`` is where encoded images are decoded (the worker's
    GPU when it has one: batched nvjpeg).

    Steps ``s + 1 .. s + read_ahead`` are read and decoded on a background thread while step
    ``s`` trains (the thread is the only one that touches the shard iterators, so their order
    is kept; a deeper queue also hides the second or so each new epoch's Ray Data execution
    takes to start); augmentation, which draws from torch's global RNG seeded per step, stays
    on the caller's thread. ``steps`` (the run's total) stops it reading past the last step.
    """

    def __init__(
        self, shards: dict[str, Any], info: StreamInfo, batch_size: int, seed: int, rank: int,
        world: int, shuffle_buffer: int, prefetch: int, decode_threads: int = 4,
        decode_device: torch.device | str = "cpu", weak: Augment | None = None,
        strong: Augment | None = None, augment_source: bool = False, steps: int | None = None,
        read_ahead: int = 1,
    ) -> None:  # fmt: skip
        args = (batch_size, seed, rank, world, shuffle_buffer, prefetch)
        self.steps, self.depth = steps, read_ahead
        self.device = torch.device(decode_device)
        cuda = self.device.type == "cuda"  # nvjpeg on the worker's GPU, not the thread's default
        if cuda and self.device.index is None:  # "cuda" (no Ray): the current device, by number
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._reader = ThreadPoolExecutor(
            1,
            "shiftray-stream",
            torch.cuda.set_device if cuda else None,
            (self.device,) if cuda else (),
        )
        self._ahead: dict[int, Future] = {}  # step -> its read, in submission order
        self.src = None
        if "source" in shards:
            self.src = ShardStream(shards["source"], "source", info.source_rows, *args)
        self.tgt = ShardStream(shards["target"], "target", info.target_rows, *args)
        self.info, self.threads = info, decode_threads
        self.weak, self.strong, self.augment_source = weak, strong, augment_source

    def _drain(self) -> None:
        """Drop the queued reads: those not started are cancelled, the running one is waited
        for (the next read must find the shard iterators at rest)."""
        for pending in self._ahead.values():
            pending.cancel()
        for pending in self._ahead.values():
            if not pending.cancelled():
                pending.exception()
        self._ahead.clear()

    def close(self) -> None:
        """Finish the queued reads (not cancel them: every rank has queued the same steps, and a
        read that opens a new epoch waits at Ray Data's split barrier until every rank's does;
        a rank that cancelled its copy would leave the others waiting there for ever), then
        close the shard iterators."""
        for pending in self._ahead.values():
            pending.exception()  # waits; a failed read has nothing left to close
        self._ahead.clear()
        self._reader.shutdown(wait=True)
        for stream in (self.src, self.tgt):
            if stream is not None:
                stream.close()

    def _inputs(self, table: pa.Table) -> torch.Tensor:
        col = table.column("input")
        if self.info.encoded:
            size = self.info.input_shape[-1]
            return decode_batch(col.to_pylist(), size, self.device, self.threads)
        flat = col.combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return torch.from_numpy(
            flat.astype(np.float32, copy=False).reshape(len(table), *self.info.input_shape)
        )

    def _read(self, step: int) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """Step ``step``'s decoded inputs (on the reader thread)."""
        x_s = y_s = None
        if self.src is not None:
            t = self.src.batch(step)
            x_s = self._inputs(t)
            y_s = torch.from_numpy(t.column("label").to_numpy().astype(np.int64))
        raw_t = self._inputs(self.tgt.batch(step))  # the label column is not read
        return x_s, y_s, raw_t

    def batch(self, step: int) -> DABatch:
        if self.depth == 0:  # no reader thread: read on the caller's
            x_s, y_s, raw_t = self._read(step)
            return augmented_batch(
                x_s, y_s, raw_t, None, self.weak, self.strong, self.augment_source
            )
        if step not in self._ahead:  # the first step, or a jump: let queued reads finish
            self._drain()
            self._ahead[step] = self._reader.submit(self._read, step)
        for stale in [s for s in self._ahead if s < step]:  # a jump forward inside the queue
            self._ahead.pop(stale)
        x_s, y_s, raw_t = self._ahead.pop(step).result()
        nxt = max(self._ahead, default=step) + 1
        while len(self._ahead) < self.depth and (self.steps is None or nxt < self.steps):
            self._ahead[nxt] = self._reader.submit(self._read, nxt)  # in order, one thread
            nxt += 1
        return augmented_batch(x_s, y_s, raw_t, None, self.weak, self.strong, self.augment_source)
