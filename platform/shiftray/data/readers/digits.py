"""MNIST <-> USPS handwritten digits."""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shiftray.data.arrays import DomainArrays
from shiftray.data.files import RemoteFile, find_files
from shiftray.data.readers.base import GH, Benchmark, InputContract, read_libsvm_dense


def resize_square(images: np.ndarray, size: int) -> np.ndarray:
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
    def input_contract(cls, opts, input_shape) -> InputContract:
        """Images in [0, 1]; another size is stretched whole to S x S, as `read` resizes."""
        return replace(super().input_contract(opts, input_shape), resize="stretch")

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
        x = resize_square(x, opts.image_size)[:, None]  # (N, 1, S, S)
        if opts.channels == 3:
            x = np.repeat(x, 3, axis=1)
        return DomainArrays(np.ascontiguousarray(x, dtype=np.float32), y, domain, split)
