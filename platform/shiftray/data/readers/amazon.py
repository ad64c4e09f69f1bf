"""Amazon multi-domain sentiment, the DANN paper's 5,000-d bag-of-words copy."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np
from pydantic import Field

from shiftray.data.arrays import DomainArrays
from shiftray.data.files import RemoteFile, find_files
from shiftray.data.readers.base import (
    GH,
    Benchmark,
    InputContract,
    ReaderOptions,
    read_libsvm_dense,
)


class AmazonOptions(ReaderOptions):
    reader = "amazon"
    renamed = {"features": ("transform", "counts, binary or log1p of the word counts")}
    transform: Literal["counts", "binary", "log1p"] = Field(
        "log1p", description="transform of the 5,000 unigram/bigram counts"
    )


AMAZON_DOMAINS = ["books", "dvd", "electronics", "kitchen"]


AMAZON_REPO = f"{GH}/GRAAL-Research/domain_adversarial_neural_network/74eec5e0ae06bd6614bce048abba492c16a633e3/data"


AMAZON_SHA = {
    "books_train": "317f9a2ec34b81de770b63a84d8c5cc2dc16bd0be6e079d2ff5b5bad5213ea19",
    "books_test": "fe4605c7dcf0e0a9410fd2a32f247caaf9abb352cc6e4c3e0f400853163ad9c4",
    "dvd_train": "95f602aa08bf6b55758f7b0b18df3882fe30acb11987ee60b6b4bb3c44cba733",
    "dvd_test": "4fe1b1a15010f78d8d0c49fe362d35fd4677463a45f1ac02a9f410ae1e638060",
    "electronics_train": "7d0061f03ff3827e4f8036b051b5e5828fddc0cd115aa5b212cd28d624dc14e4",
    "electronics_test": "641783bc941839c3a111d3488a1b7e3bd820a61ec14a129e7429b47703aa961d",
    "kitchen_train": "a70b5ebfe1413e0e16280360905f5c3b64389c435cd20c0165dc9d7f293b31b5",
    "kitchen_test": "e1502b97a824eb12314be4447394fa736fecb781c0724e6529cd6733ac7ff6d8",
}


class AmazonReviews(Benchmark):
    """Amazon multi-domain sentiment (Blitzer et al., ACL 2007), 5,000-d bag of uni/bigrams.

    The DANN paper's copy (Ganin et al., JMLR 2016, Sec. 5.1): per domain 2,000 labelled train
    reviews (balanced) and a held-out test set; labels -1/+1 become 0 (negative) / 1 (positive).
    """

    name = "amazon"
    Options = AmazonOptions
    classes = ["negative", "positive"]

    @classmethod
    def domains(cls, opts):
        return AMAZON_DOMAINS

    @classmethod
    def input_contract(cls, opts, input_shape) -> InputContract:
        """Word counts and their transforms: never negative; binary ones at most 1."""
        high = 1.0 if opts.transform == "binary" else None
        return replace(super().input_contract(opts, input_shape), range=(0.0, high))

    @classmethod
    def read(cls, domain, split, opts):
        key = f"{domain}_{split}"
        rf = RemoteFile(
            f"amazon_reviews/{key}.svmlight", f"{AMAZON_REPO}/{key}.svmlight", AMAZON_SHA[key]
        )
        (path,) = find_files("amazon", [rf])
        x, y = read_libsvm_dense(path, 5000, zero_based=True)
        if opts.transform == "binary":
            x = (x > 0).astype(np.float32)
        elif opts.transform == "log1p":
            x = np.log1p(x)
        return DomainArrays(x, (y > 0).astype(np.int64), domain, split)
