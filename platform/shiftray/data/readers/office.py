"""Office-Caltech10 with 800-bin SURF bag-of-words features."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np
from pydantic import Field

from shiftray.data.arrays import DomainArrays
from shiftray.data.files import RemoteFile, find_files
from shiftray.data.readers.base import GH, Benchmark, InputContract, ReaderOptions


class OfficeOptions(ReaderOptions):
    reader = "office_caltech"
    renamed = {
        "normalize": (
            "domain_normalize",
            "each domain by its own statistics, the GFK/JDA protocol; data.normalize is the "
            "job's own transform, fitted on source and target together",
        )
    }
    domain_normalize: Literal["none", "l1", "zscore"] = Field(
        "zscore", description="zscore: each row to unit sum, then z-score per domain (GFK/JDA)"
    )


OFFICE_REPO = f"{GH}/LeiTian-qj/CMMS/1c7c45b858bd400b25c132d178c8e2f603074afc/data/Office-Caltech10"


OFFICE_FILES = {
    "amazon": (
        "amazon_SURF_L10.mat",
        "df32548b994e18d364c99e1f317e1fae100597259f0423a41b90f4f68187bb1f",
    ),
    "caltech": (
        "Caltech10_SURF_L10.mat",
        "4f9334c8ced489d5054de97a5fd51a61f017f3bcd1f38c9a85c6d78cb9d7bda5",
    ),
    "dslr": (
        "dslr_SURF_L10.mat",
        "44d673c68e1d07b837893aa74dba3b986e4a6cc3fd66f0dd357683bdef059216",
    ),
    "webcam": (
        "webcam_SURF_L10.mat",
        "a6a9c78b4b7181dfbb58bcfd351d4ebd737f171c31247b8884948aa156d3f700",
    ),
}


class OfficeCaltech10(Benchmark):
    """Office-Caltech10 with 800-bin SURF bag-of-words features (Gong et al., CVPR 2012).

    Each domain is one set used whole: labelled when it is the source, unlabelled training data
    and test set when it is the target (the standard transductive protocol of GFK/JDA).
    """

    name = "office_caltech"
    Options = OfficeOptions
    classes = [
        "back_pack", "bike", "calculator", "headphones", "keyboard",
        "laptop_computer", "monitor", "mouse", "mug", "projector",
    ]  # fmt: skip

    @classmethod
    def domains(cls, opts):
        return list(OFFICE_FILES)

    @classmethod
    def input_contract(cls, opts, input_shape) -> InputContract:
        """SURF histograms: counts never negative, l1-normalised ones at most 1; z-scored ones
        any finite values."""
        ranges = {"none": (0.0, None), "l1": (0.0, 1.0), "zscore": None}
        contract = super().input_contract(opts, input_shape)
        return replace(contract, range=ranges[opts.domain_normalize])

    @classmethod
    def read(cls, domain, split, opts):
        import scipy.io

        fname, sha = OFFICE_FILES[domain]
        rf = RemoteFile(f"office_caltech10/{fname}", f"{OFFICE_REPO}/{fname}", sha)
        (path,) = find_files("office_caltech", [rf])
        mat = scipy.io.loadmat(path)
        x = mat["fts"].astype(np.float64)
        y = mat["labels"].reshape(-1).astype(np.int64) - 1
        if opts.domain_normalize in ("l1", "zscore"):
            x = x / np.maximum(x.sum(axis=1, keepdims=True), 1e-12)
        if opts.domain_normalize == "zscore":
            x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
        return DomainArrays(x.astype(np.float32), y, domain, split)
