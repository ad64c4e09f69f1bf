"""DataSpec -> DomainData: labelled source train, unlabelled target train, target test."""

from __future__ import annotations

import numpy as np

from shiftray.config.schema import DataSpec, JobSpec
from shiftray.data.arrays import DomainArrays, DomainData
from shiftray.data.normalize import fit_normalization
from shiftray.errors import UserInputError
from shiftray.registry import DATASETS, METHODS, reads_tokens


def load_domain_data(
    spec: DataSpec, with_source: bool = True, backbone: str | None = None,
    tasks: dict[str, str] | None = None,
) -> DomainData:  # fmt: skip
    """``with_source=False`` (source-free methods) never opens the source domain's files.
    Texts (a reader's ``text`` column) are tokenised by ``backbone``'s tokenizer (hf/...).
    ``tasks``: a multi-task job's extra tasks (name -> label column), read beside the labels."""
    bench = DATASETS.get(spec.benchmark)
    opts = bench.Options.model_validate(spec.options)
    if tasks and "ignore_columns" in type(opts).model_fields:  # a task's labels are no feature
        opts = opts.model_copy(update={"ignore_columns": [*opts.ignore_columns, *tasks.values()]})
    cache: dict[tuple[str, str], DomainArrays] = {}
    task_classes: dict[str, list[str]] = {}

    def read(domain: str, split: str) -> DomainArrays:
        if (domain, split) not in cache:
            arrays = bench.read(domain, split, opts)
            if tasks:
                arrays.tasks = {}
                for name, column in tasks.items():
                    arrays.tasks[name], task_classes[name] = bench.task_labels(domain, split, opts, column)
            if arrays.x.dtype == object:  # texts -> token ids
                arrays.x = _token_ids(arrays.x, backbone, getattr(opts, "max_length", 128))
            elif reads_tokens(backbone) and arrays.x.dtype.kind == "f":
                raise UserInputError(
                    f"model.backbone={backbone} reads texts; {spec.benchmark!r} gives numbers. Name "
                    "the text column (data.options.text) or use a backbone for numbers"
                )
            cache[(domain, split)] = arrays
        return cache[(domain, split)]

    source = labelled(read(spec.source, "train")) if with_source else None
    if source is not None and (source.y is None or len(source) == 0):
        raise UserInputError(
            f"data.source={spec.source!r} has no labelled training rows: the source domain "
            "is the labelled one (unlabelled rows: empty or -1 labels)"
        )
    target = read(spec.target, "train")
    test = labelled(read(spec.target, "test"))  # unlabelled: no target metrics, label-free ones
    few = None
    if spec.target_labels_per_class > 0:  # semi-supervised: k per class train, leave the test
        few, target = few_labelled(target, spec.target_labels_per_class, spec.target_labels_seed)
        test = excluding(test, few)
    target = target.without_labels()  # from here on no target training label exists
    source_val = None
    if source is not None and spec.source_val_fraction > 0:
        source, source_val = split_holdout(source, spec.source_val_fraction)
    shape = tuple(target.x.shape[1:])
    rows = [a.x for a in (source, target) if a is not None]  # training rows; never a test row
    if spec.normalize != "none" and len(shape) == 3:
        raise UserInputError(
            "data.normalize is for feature vectors; these inputs are images (the backbone "
            "normalises those itself)"
        )
    norm = fit_normalization(spec.normalize, rows) if spec.normalize != "none" else None
    return DomainData(source, target, test, bench.class_names(opts), shape, source_val,
                      normalization=norm, target_labelled=few,
                      task_classes=task_classes or None)  # fmt: skip


def _token_ids(texts: np.ndarray, backbone: str | None, max_length: int) -> np.ndarray:
    if not reads_tokens(backbone):
        raise UserInputError(
            f"the data are texts; model.backbone={backbone!r} reads numbers. Use a text encoder, "
            "model.backbone: hf/<hub name or folder> (e.g. hf/sentence-transformers/all-MiniLM-L6-v2)"
        )
    from shiftray.models.text import tokenize, tokenizer_of

    return tokenize(texts, tokenizer_of(backbone), max_length)


def few_labelled(
    target: DomainArrays, k: int, seed: int
) -> tuple[DomainArrays, DomainArrays]:
    """k labelled rows per class of the target training split, drawn by ``seed`` (the
    semi-supervised protocol: the benchmark's labels simulate the few a user would label), and
    the other rows, whose labels the caller drops."""
    if target.y is None or (target.y < 0).all():
        raise UserInputError(
            f"data.target_labels_per_class: the {target.domain!r} training split has no labels "
            "to take k per class from"
        )
    rng = np.random.default_rng([seed, k])
    picked = []
    for c in np.unique(target.y[target.y >= 0]):
        rows = np.flatnonzero(target.y == c)
        if len(rows) < k:
            raise UserInputError(
                f"data.target_labels_per_class={k}: class {int(c)} of {target.domain!r} has "
                f"only {len(rows)} training rows"
            )
        picked.append(rng.choice(rows, size=k, replace=False))
    few = np.sort(np.concatenate(picked))
    rest = np.setdiff1d(np.arange(len(target)), few)
    return target.rows(few, "labelled"), target.rows(rest)


def excluding(test: DomainArrays, few: DomainArrays) -> DomainArrays:
    """The test rows, less any whose input equals a labelled row (benchmarks that use a domain
    whole, Office-Caltech, test on the training rows: a labelled row must not be scored)."""
    seen = {np.ascontiguousarray(r).tobytes() for r in few.x}
    keep = np.array([np.ascontiguousarray(r).tobytes() not in seen for r in test.x], dtype=bool)
    return test if keep.all() else test.rows(keep)


def labelled(arrays: DomainArrays) -> DomainArrays:
    """Only the rows with a label (user tables mark unlabelled rows -1); no labels at all: the
    arrays with ``y=None``."""
    if arrays.y is None or (arrays.y >= 0).all():
        return arrays
    keep = arrays.y >= 0
    if not keep.any():
        return DomainArrays(arrays.x, None, arrays.domain, arrays.split, arrays.tasks)
    return arrays.rows(keep)


def split_holdout(
    arrays: DomainArrays, fraction: float, seed: int = 0
) -> tuple[DomainArrays, DomainArrays]:
    """A fixed random holdout (the same for every seed and worker), e.g. for source validation."""
    perm = np.random.default_rng(seed).permutation(len(arrays))
    n_val = max(1, int(round(fraction * len(arrays))))
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return arrays.rows(train), arrays.rows(val, "val")


def load_job_data(spec: JobSpec) -> DomainData:
    """The data a job needs: without the source when its method is source-free."""
    return load_domain_data(spec.data, with_source=METHODS.get(spec.method.name).uses_source,
                            backbone=spec.model.backbone,
                            tasks={t.name: t.label for t in spec.tasks[1:]})  # fmt: skip
