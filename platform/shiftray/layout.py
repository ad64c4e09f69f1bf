"""Memory layout of image batches."""

from __future__ import annotations

import torch


def as_format(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-D image batch in one explicit memory format (others pass through).

    Size-1 dims make strides ambiguous: an (N, 1, H, W) batch counts as contiguous in both NCHW
    and NHWC, and which convolution kernels run then depends on the stride values, which depend
    on how the array was made (a NumPy view with a 0 stride, an unpickled copy from the object
    store). On CPU that alone moved a LeNet step by 30%. Here the strides are made canonical
    for the chosen format: free when only size-1 strides differ, one copy otherwise.
    """
    if t.dim() != 4:
        return t
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    canon = torch.empty(t.shape, device="meta", memory_format=fmt).stride()
    if t.stride() == canon:
        return t
    if t.is_contiguous(memory_format=fmt):  # same element layout: relabel the strides
        return t.as_strided(t.shape, canon)
    return t.contiguous(memory_format=fmt)
