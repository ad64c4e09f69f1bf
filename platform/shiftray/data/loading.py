"""DataSpec -> DomainData: labelled source train, unlabelled target train, target test."""

from __future__ import annotations

from shiftray.config.schema import DataSpec
from shiftray.data.formats import DomainArrays, DomainData
from shiftray.registry import DATASETS, load_all


def load_domain_data(spec: DataSpec) -> DomainData:
    load_all()
    bench = DATASETS.get(spec.benchmark)
    opts = bench.Options.model_validate(spec.options)
    cache: dict[tuple[str, str], DomainArrays] = {}

    def read(domain: str, split: str) -> DomainArrays:
        if (domain, split) not in cache:
            cache[(domain, split)] = bench.read(domain, split, opts)
        return cache[(domain, split)]

    source = read(spec.source, "train")
    target = read(spec.target, "train").without_labels()
    test = read(spec.target, "test")
    return DomainData(source, target, test, bench.class_names(opts), tuple(source.x.shape[1:]))
