"""DataSpec -> DomainData: labelled source train, unlabelled target train, target test."""

from __future__ import annotations

from shiftray.config.schema import DataSpec, JobSpec
from shiftray.data.formats import DomainArrays, DomainData
from shiftray.registry import DATASETS, METHODS, load_all


def load_domain_data(spec: DataSpec, with_source: bool = True) -> DomainData:
    """``with_source=False`` (source-free methods) never opens the source domain's files."""
    load_all()
    bench = DATASETS.get(spec.benchmark)
    opts = bench.Options.model_validate(spec.options)
    cache: dict[tuple[str, str], DomainArrays] = {}

    def read(domain: str, split: str) -> DomainArrays:
        if (domain, split) not in cache:
            cache[(domain, split)] = bench.read(domain, split, opts)
        return cache[(domain, split)]

    source = read(spec.source, "train") if with_source else None
    target = read(spec.target, "train").without_labels()
    test = read(spec.target, "test")
    return DomainData(source, target, test, bench.class_names(opts), tuple(target.x.shape[1:]))


def load_job_data(spec: JobSpec) -> DomainData:
    """The data a job needs: without the source when its method is source-free."""
    load_all()
    return load_domain_data(spec.data, with_source=METHODS.get(spec.method.name).uses_source)
