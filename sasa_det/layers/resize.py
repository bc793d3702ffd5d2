"""Bilinear resizing as two small matrix products, for runs that ask for deterministic algorithms.

``F.interpolate(mode="bilinear")`` has no deterministic backward on CUDA (its gradient is scattered with
atomic adds, and ``torch.use_deterministic_algorithms(True)``, which ``trainer.deterministic=true`` sets,
makes it raise). Resizing is linear and separable: ``out = A_H x A_W^T`` with interpolation matrices
``A`` of shape ``(out, in)``, whose backward is two matrix products, deterministic everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bilinear_matrix", "bilinear_resize", "bilinear_resize_matrices", "deterministic_off_cpu", "linear_resize"]


def deterministic_off_cpu(x: Tensor) -> bool:
    """True when deterministic algorithms are on and ``x`` is not on the CPU (where interpolation is deterministic)."""
    return torch.are_deterministic_algorithms_enabled() and x.device.type != "cpu"


def bilinear_matrix(size_in: int, size_out: int, device=None, dtype=None, align_corners: bool = False) -> Tensor:
    """``(size_out, size_in)`` weights of linear resizing along one axis, as ``F.interpolate`` computes them.

    Output pixel ``o`` samples ``s = (o + 0.5)·size_in/size_out - 0.5`` (clamped at 0), or with
    ``align_corners`` ``s = o·(size_in - 1)/(size_out - 1)``, mixing the input pixels ``floor(s)`` and
    ``floor(s) + 1`` (clamped at the last one).
    """
    positions = torch.arange(size_out, device=device, dtype=torch.float64)
    if align_corners:
        source = positions * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    else:
        source = ((positions + 0.5) * (size_in / size_out) - 0.5).clamp(min=0)
    low = source.floor().long().clamp(max=size_in - 1)
    high = (low + 1).clamp(max=size_in - 1)
    weight = source - low.to(torch.float64)
    matrix = torch.zeros(size_out, size_in, device=device, dtype=torch.float64)
    rows = torch.arange(size_out, device=device)
    matrix.index_put_((rows, low), 1 - weight, accumulate=True)
    matrix.index_put_((rows, high), weight, accumulate=True)
    return matrix.to(dtype or torch.get_default_dtype())


def bilinear_resize_matrices(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``(N, C, h, w) -> (N, C, H, W)``: bilinear resizing (``align_corners=False``) by matrix products."""
    height, width = size
    rows = bilinear_matrix(x.shape[-2], height, x.device, x.dtype)
    cols = bilinear_matrix(x.shape[-1], width, x.device, x.dtype)
    return torch.matmul(torch.matmul(rows, x), cols.t())


def bilinear_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resizing (``align_corners=False``); by matrices when deterministic algorithms are on, off the CPU."""
    if deterministic_off_cpu(x):
        return bilinear_resize_matrices(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def linear_resize(table: Tensor, length: int) -> Tensor:
    """``(L, d) -> (length, d)``: linear resizing along the first axis with ``align_corners=True``
    (by a matrix when deterministic algorithms are on, off the CPU)."""
    if deterministic_off_cpu(table):
        return bilinear_matrix(table.shape[0], length, table.device, table.dtype, align_corners=True) @ table
    resized = F.interpolate(table.transpose(0, 1).unsqueeze(0), size=length, mode="linear", align_corners=True)
    return resized.squeeze(0).transpose(0, 1)
