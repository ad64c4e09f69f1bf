"""DataSpec -> DomainData: labelled source train, unlabelled target train, target test."""

from __future__ import annotations

import numpy as np

from shiftray.config.schema import DataSpec, JobSpec
from shiftray.data.arrays import DomainArrays, DomainData
from shiftray.data.images import EncodedImages
from shiftray.data.normalize import fit_normalization
from shiftray.errors import UserInputError
from shiftray.registry import DATASETS, METHODS


def load_domain_data(spec: DataSpec, with_source: bool = True) -> DomainData:
    """``with_source=False`` (source-free methods) never opens the source domain's files."""
    bench = DATASETS.get(spec.benchmark)
    opts = bench.Options.model_validate(spec.options)
    cache: dict[tuple[str, str], DomainArrays] = {}

    def read(domain: str, split: str) -> DomainArrays:
        if (domain, split) not in cache:
            cache[(domain, split)] = bench.read(domain, split, opts)
        return cache[(domain, split)]

    source = labelled(read(spec.source, "train")) if with_source else None
    if source is not None and (source.y is None or len(source) == 0):
        raise UserInputError(
            f"data.source={spec.source!r} has no labelled training rows: the source domain "
            "is the labelled one (unlabelled rows: empty or -1 labels)"
        )
    target = read(spec.target, "train").without_labels()
    test = labelled(read(spec.target, "test"))  # unlabelled: no target metrics, label-free ones
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
                      normalization=norm)  # fmt: skip


def labelled(arrays: DomainArrays) -> DomainArrays:
    """Only the rows with a label (user tables mark unlabelled rows -1); no labels at all: the
    arrays with ``y=None``."""
    if arrays.y is None or (arrays.y >= 0).all():
        return arrays
    keep = arrays.y >= 0
    if not keep.any():
        return DomainArrays(arrays.x, None, arrays.domain, arrays.split)
    x = arrays.x.take(keep) if isinstance(arrays.x, EncodedImages) else arrays.x[keep]
    return DomainArrays(x, arrays.y[keep], arrays.domain, arrays.split)


def split_holdout(
    arrays: DomainArrays, fraction: float, seed: int = 0
) -> tuple[DomainArrays, DomainArrays]:
    """A fixed random holdout (the same for every seed and worker), e.g. for source validation."""
    perm = np.random.default_rng(seed).permutation(len(arrays))
    n_val = max(1, int(round(fraction * len(arrays))))
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    y = arrays.y
    return (
        DomainArrays(arrays.x[train], None if y is None else y[train], arrays.domain, arrays.split),
        DomainArrays(arrays.x[val], None if y is None else y[val], arrays.domain, "val"),
    )


def load_job_data(spec: JobSpec) -> DomainData:
    """The data a job needs: without the source when its method is source-free."""
    return load_domain_data(spec.data, with_source=METHODS.get(spec.method.name).uses_source)
