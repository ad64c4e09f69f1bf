"""Readers for the real benchmarks -> domain tables (see `shiftray.data.formats`).

Each benchmark is registered by name and declares its domains, its reader options (a pydantic
model, so job specs are validated), its files (with original sources and checksums) and how a
domain split is read. Protocols follow the papers cited in each docstring.
"""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from shiftray.data.files import RemoteFile, find_files
from shiftray.data.formats import DomainArrays, to_table

GH = "https://raw.githubusercontent.com"


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Benchmark:
    """Base: subclasses set ``name``, ``Options``, ``classes`` and implement ``read``."""

    name: str = ""
    Options: type[BaseModel] = NoOptions
    classes: list[str] = []
    splits: tuple[str, ...] = ("train", "test")

    @classmethod
    def domains(cls, opts: BaseModel) -> list[str] | None:
        raise NotImplementedError

    @classmethod
    def read(cls, domain: str, split: str, opts: BaseModel) -> DomainArrays:
        raise NotImplementedError

    @classmethod
    def load(cls, domain: str, split: str, options: dict | None = None) -> pa.Table:
        opts = cls.Options.model_validate(options or {})
        arrays = cls.read(domain, split, opts)
        return to_table(arrays, cls.class_names(opts))

    @classmethod
    def class_names(cls, opts: BaseModel) -> list[str]:
        return list(cls.classes)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, H, W) float images, as torchvision's Resize does for tensors."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(images))[:, None]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[:, 0].clamp_(0, 1).numpy()


class DigitsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_size: int = Field(28, ge=8, le=256, description="images are resized to this square")
    channels: Literal[1, 3] = Field(
        1, description="3 repeats the grey channel (ImageNet backbones)"
    )
    usps_format: Literal["h5", "libsvm"] = Field(
        "h5", description="usps.h5 (train+test) or LIBSVM usps.bz2/usps.t.bz2; never mixed"
    )


MNIST_FILES = [
    RemoteFile(
        "mnist/t10k-images-idx3-ubyte.gz",
        f"{GH}/unixpickle/mnistlite/7e77ce183b42950baacbe6de3986dbdc6ae771e8/data/t10k-images-idx3-ubyte.gz",
        "ba05d2d6e06f59dd97d2d5378250478bb5c9b64296a5c2681700569121e3a2d7",
    ),
    RemoteFile(
        "mnist/t10k-labels-idx1-ubyte.gz",
        f"{GH}/unixpickle/mnistlite/7e77ce183b42950baacbe6de3986dbdc6ae771e8/data/t10k-labels-idx1-ubyte.gz",
        "94088eab8a64f51a9b34cc9716f54b6548ef8b2fd16ada6d1575091b933dbf4b",
    ),
]
USPS_H5 = RemoteFile(
    "usps/usps.h5",
    f"{GH}/niuers/Learning-From-Data-A-Short-Course/879a698b960e5867f7c2b11f8938fa89c3d21839/data/usps.h5",
    "734f88c541104a956d88be2c95d03b4a463ffd74ccc2ba9c80841fb98e3fcb36",
)
LIBSVM = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass"
USPS_LIBSVM = {
    "train": RemoteFile(
        "usps/usps.bz2", f"{LIBSVM}/usps.bz2", md5="ec16c51db3855ca6c91edd34d0e9b197"
    ),
    "test": RemoteFile(
        "usps/usps.t.bz2",
        f"{LIBSVM}/usps.t.bz2",
        "a9c0164e797d60142a50604917f0baa604f326e9a689698763793fa5d12ffc4e",
    ),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse a (gzipped) IDX file: big-endian magic, dims, then uint8 data."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(*dims)


def read_libsvm_dense(
    path: Path, n_features: int, zero_based: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Parse svmlight/LIBSVM text (optionally .bz2) into a dense float32 matrix and labels."""
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rt") as f:
        lines = [ln.split() for ln in f if ln.strip()]
    x = np.zeros((len(lines), n_features), dtype=np.float32)
    y = np.empty(len(lines), dtype=np.float64)
    off = 0 if zero_based else 1
    for i, parts in enumerate(lines):
        y[i] = float(parts[0])
        if len(parts) > 1:
            pairs = np.array([p.split(":") for p in parts[1:]], dtype=np.float64)
            x[i, pairs[:, 0].astype(np.int64) - off] = pairs[:, 1]
    return x, y


class Digits(Benchmark):
    """MNIST <-> USPS handwritten digits (grey images in [0, 1], resized to image_size).

    MNIST here is its 10,000-image test set (the only copy available offline): it serves as the
    source's training set, or as the unlabelled target and its test set (transductive, as in
    the ADDA/CyCADA protocols). USPS keeps its standard 7,291 / 2,007 split (Hull, TPAMI 1994).
    """

    name = "digits"
    Options = DigitsOptions
    classes = [str(i) for i in range(10)]

    @classmethod
    def domains(cls, opts):
        return ["mnist", "usps"]

    @classmethod
    def read(cls, domain, split, opts):
        if domain == "mnist":
            img_path, lbl_path = find_files("digits/mnist", MNIST_FILES)
            x = read_idx(img_path).astype(np.float32) / 255.0
            y = read_idx(lbl_path).astype(np.int64)
        elif opts.usps_format == "h5":
            import h5py

            (path,) = find_files("digits/usps", [USPS_H5])
            with h5py.File(path, "r") as f:
                x = f[split]["data"][:].astype(np.float32).reshape(-1, 16, 16)
                y = f[split]["target"][:].astype(np.int64)
        else:
            (path,) = find_files("digits/usps", [USPS_LIBSVM[split]])
            x, y = read_libsvm_dense(path, 256, zero_based=False)
            x = ((x + 1.0) / 2.0).reshape(-1, 16, 16)
            y = y.astype(np.int64) - 1
        x = _resize(x, opts.image_size)[:, None]  # (N, 1, S, S)
        if opts.channels == 3:
            x = np.repeat(x, 3, axis=1)
        return DomainArrays(np.ascontiguousarray(x, dtype=np.float32), y, domain, split)


class AmazonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    features: Literal["counts", "binary", "log1p"] = Field(
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
    def read(cls, domain, split, opts):
        key = f"{domain}_{split}"
        rf = RemoteFile(
            f"amazon_reviews/{key}.svmlight", f"{AMAZON_REPO}/{key}.svmlight", AMAZON_SHA[key]
        )
        (path,) = find_files("amazon", [rf])
        x, y = read_libsvm_dense(path, 5000, zero_based=True)
        if opts.features == "binary":
            x = (x > 0).astype(np.float32)
        elif opts.features == "log1p":
            x = np.log1p(x)
        return DomainArrays(x, (y > 0).astype(np.int64), domain, split)


class OfficeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    normalize: Literal["none", "l1", "zscore"] = Field(
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
    def read(cls, domain, split, opts):
        import scipy.io

        fname, sha = OFFICE_FILES[domain]
        rf = RemoteFile(f"office_caltech10/{fname}", f"{OFFICE_REPO}/{fname}", sha)
        (path,) = find_files("office_caltech", [rf])
        mat = scipy.io.loadmat(path)
        x = mat["fts"].astype(np.float64)
        y = mat["labels"].reshape(-1).astype(np.int64) - 1
        if opts.normalize in ("l1", "zscore"):
            x = x / np.maximum(x.sum(axis=1, keepdims=True), 1e-12)
        if opts.normalize == "zscore":
            x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
        return DomainArrays(x.astype(np.float32), y, domain, split)
