"""SASA windowed attention as fused Triton kernels (``impl="triton"``, what ``impl="auto"`` picks on CUDA).

Forward: one program per (batch·head, tile of ``BLOCK_H × BLOCK_W`` queries). It loads the tile's queries
once and walks the k² window offsets with an online softmax (running maximum, running sum, running
weighted sum of values), adding the relative term as ``q·(k + [r_row[a], r_col[b]])`` (Eq. 3 with the
row/column split of Sec. 2.2). The shifted key/value tiles of one offset overlap those of the others,
so after the first offsets they come from cache: the block's halo is read from memory about once.
Only the output and one log-sum-exp per query are written; no per-pixel K/V copies and no logit
tensor exist in global memory.

Backward recomputes the logits instead of storing them (``p = exp(logit - lse)``), in two kernels:
one per query tile (``grad_q``, and per-tile partial sums of the relative-table gradients) and one per
key tile (``grad_k``, ``grad_v``: each key gathers from the k² queries whose window holds it, so no
atomics are needed).

Accumulation is float32 for float32/float16/bfloat16 inputs and float64 for float64 ones. Borders:
zero keys/values that take part in the softmax, or (``mask_padding``) excluded keys. Triton is imported
on first use; with ``TRITON_INTERPRET=1`` set before that import the kernels also run on CPU tensors,
which is how the tests check them against the reference.
"""

from __future__ import annotations

import importlib.util
import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["local_attention_triton", "supports_triton", "triton_available"]

_kernels = None


def triton_available() -> bool:
    """True when the ``triton`` package is installed (it comes with torch's CUDA wheels on Linux)."""
    return importlib.util.find_spec("triton") is not None


def supports_triton(q: Tensor) -> bool:
    """``impl="auto"`` uses the kernels for CUDA tensors of float16/bfloat16/float32/float64, head width <= 128."""
    return (
        q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
        and q.shape[2] <= 128
        and triton_available()
    )


def _get_kernels():
    """The three kernels ``(forward, backward by queries, backward by keys)``; imports triton once."""
    global _kernels
    if _kernels is None:
        from . import local_attention_triton_kernels as kernels

        _kernels = (kernels.forward_kernel, kernels.backward_query_kernel, kernels.backward_key_kernel)
    return _kernels


def _launch_settings(q: Tensor) -> dict:
    """Tile shape, padded head width and accumulation dtype for ``q`` ``(B, d, H, W)``."""
    import triton.language as tl

    d = q.shape[1]
    block_h, block_w = (8, 16) if d <= 32 else (8, 8)  # 128 or 64 queries per program
    return {
        "D": max(2, 1 << (d - 1).bit_length()),
        "BLOCK_H": block_h,
        "BLOCK_W": block_w,
        "ACC": tl.float64 if q.dtype == torch.float64 else tl.float32,
    }


class _TritonLocalAttention(torch.autograd.Function):
    """Autograd wrapper of the forward kernel and the two backward kernels."""

    @staticmethod
    def forward(ctx, q, k, v, rel_row, rel_col, kernel_size, mask_padding):  # type: ignore[override]
        n, heads, d, height, width = q.shape
        acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        q_, k_, v_ = (t.to(q.dtype).reshape(n * heads, d, height, width).contiguous() for t in (q, k, v))
        rel_row_, rel_col_ = rel_row.to(acc_dtype).contiguous(), rel_col.to(acc_dtype).contiguous()
        out = torch.empty_like(q_)
        lse = torch.empty(n * heads, height, width, device=q.device, dtype=acc_dtype)
        settings = _launch_settings(q_)
        grid = (n * heads, math.ceil(height / settings["BLOCK_H"]) * math.ceil(width / settings["BLOCK_W"]))
        forward_kernel = _get_kernels()[0]
        forward_kernel[grid](q_, k_, v_, rel_row_, rel_col_, out, lse, height, width, d // 2, d,
                             KS=kernel_size, MASK_PADDING=mask_padding, **settings)
        ctx.save_for_backward(q_, k_, v_, rel_row_, rel_col_, out, lse)
        ctx.kernel_size, ctx.mask_padding = kernel_size, mask_padding
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, rel_row.dtype, rel_col.dtype)
        return out.view(q.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        q_, k_, v_, rel_row_, rel_col_, out, lse = ctx.saved_tensors
        kernel_size, mask_padding = ctx.kernel_size, ctx.mask_padding
        batch, d, height, width = q_.shape
        grad_out_ = grad_out.to(q_.dtype).reshape(q_.shape).contiguous()
        delta = (grad_out_.to(lse.dtype) * out.to(lse.dtype)).sum(1).contiguous()  # sum_t p_t dp_t, per query
        settings = _launch_settings(q_)
        tiles = math.ceil(height / settings["BLOCK_H"]) * math.ceil(width / settings["BLOCK_W"])
        grad_q, grad_k, grad_v = torch.empty_like(q_), torch.empty_like(k_), torch.empty_like(v_)
        grad_rel = torch.empty(batch * tiles, kernel_size, kernel_size, settings["D"], device=q_.device, dtype=lse.dtype)
        _, query_kernel, key_kernel = _get_kernels()
        common = dict(KS=kernel_size, MASK_PADDING=mask_padding, **settings)
        query_kernel[(batch, tiles)](q_, k_, v_, rel_row_, rel_col_, grad_out_, lse, delta, grad_q, grad_rel,
                                     height, width, d // 2, d, **common)
        key_kernel[(batch, tiles)](q_, k_, v_, rel_row_, rel_col_, grad_out_, lse, delta, grad_k, grad_v,
                                   height, width, d // 2, d, **common)
        half = d // 2
        grad_rel_row = grad_rel[..., :half].sum((0, 2))  # (k_a, d/2)
        grad_rel_col = grad_rel[..., half:d].sum((0, 1))  # (k_c, d/2)
        shape = grad_out.shape
        grads = (grad_q.view(shape), grad_k.view(shape), grad_v.view(shape), grad_rel_row, grad_rel_col)
        return (*(grad.to(dtype) for grad, dtype in zip(grads, ctx.dtypes)), None, None)


def local_attention_triton(
    q: Tensor, k: Tensor, v: Tensor, rel_row: Tensor, rel_col: Tensor, kernel_size: int, mask_padding: bool
) -> Tensor:
    """Windowed attention with the fused Triton kernels; shapes as in :mod:`.local_attention_kernels`.

    Runs on CUDA tensors (and on CPU tensors when ``TRITON_INTERPRET=1`` was set before triton was
    imported). Operands are brought to the query's dtype; the relative tables are used in the
    accumulation dtype.
    """
    if not triton_available():
        raise RuntimeError("impl='triton' needs the triton package")
    return _TritonLocalAttention.apply(q, k, v, rel_row, rel_col, kernel_size, mask_padding)
