"""SASA windowed attention as fused Triton kernels (``impl="triton"``, what ``impl="auto"`` picks on CUDA).

The layer calls :func:`local_attention_triton_fused`: one GEMM projects the input to queries, keys and
values in a token-major layout ``(N, H, W, 3C)`` (a pixel's channels of one head are contiguous), the
kernels attend over each query's window, and the output comes back as ``(N, H, W, C)``, handed on as an
NCHW-shaped channels-last view (no copy). The forward stores the output and one log-sum-exp per query;
the backward recomputes the logits.

Two kernel families do the work: :mod:`.triton_kernels` (CUDA cores: a query's channels in one thread,
dot products in registers) and :mod:`.triton_tensor_core_kernels` (tensor cores: query tiles against
their key halo, the window as a mask). :func:`.triton_configs.candidate_configs` lists the tile/warp
settings of both that apply to a head width and dtype, and :mod:`.triton_autotune` times them on the
first inputs of each shape class; forward and backward are chosen separately.

:func:`local_attention_triton` is the same attention for channel-major ``(N, heads, d, H, W)`` inputs (the
registry's common signature; it packs them into the token-major layout first).

Accumulation is float32 for float16/bfloat16/float32 inputs and float64 for float64 ones. Kernels are
compiled once per (dtype, head width, window, border mode, config), not per image size, and launched on
the inputs' device. Triton is imported on first use; with ``TRITON_INTERPRET=1`` set before that import
the kernels also run on CPU tensors, which is how the tests check them against the reference.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .triton_autotune import choose_config, shape_class
from .triton_configs import TENSOR_CORE, LaunchConfig, candidate_configs, chunk_axis, kernels_of

__all__ = [
    "MAX_HEAD_WIDTH",
    "local_attention_triton",
    "local_attention_triton_fused",
    "supports_triton",
    "triton_available",
]

#: Largest head width the kernels take.
MAX_HEAD_WIDTH = 64


def triton_available() -> bool:
    """True when the ``triton`` package is installed (it comes with torch's CUDA wheels on Linux)."""
    return importlib.util.find_spec("triton") is not None


def supports_triton(q: Tensor) -> bool:
    """``impl="auto"`` uses the kernels for CUDA tensors of float16/bfloat16/float32/float64 with an even
    head width up to :data:`MAX_HEAD_WIDTH`; ``q`` is ``(N, heads, d, H, W)``."""
    return (
        q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
        and q.shape[2] <= MAX_HEAD_WIDTH
        and triton_available()
    )


def _device_guard(t: Tensor):
    """Launch on ``t``'s GPU, not the current one (several GPUs in one process)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _upcast(qkv: Tensor) -> bool:
    """Tensor-core products in float32 for bfloat16 under Triton's interpreter (its ``tl.dot`` multiplies
    bfloat16's raw bits); never on a GPU."""
    return qkv.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"


def _call(kernel, programs: int, compile_only: bool, *args, **kwargs) -> None:
    """Launch ``kernel`` on ``programs`` programs, or only compile it for these arguments (``compile_only``).

    Multiply-adds are fused (``enable_fp_fusion``), as Triton did by default before 3.9 asked for the
    choice to be made explicitly.
    """
    kwargs["enable_fp_fusion"] = True
    if compile_only:
        kernel.warmup(*args, grid=(programs,), **kwargs)
    else:
        kernel[(programs,)](*args, **kwargs)


def _launch_forward(
    config: LaunchConfig,
    qkv: Tensor,
    rel_row: Tensor,
    rel_col: Tensor,
    out: Tensor,
    lse: Tensor,
    heads: int,
    kernel_size: int,
    mask_padding: bool,
    compile_only: bool = False,
) -> None:
    """The forward kernel of ``config``: fills ``out`` ``(N, H, W, C)`` and ``lse`` ``(N·heads, H, W)``."""
    n, height, width, c3 = qkv.shape
    channels = c3 // 3
    forward, _, _ = kernels_of(config)
    constexprs = config.constexprs(kernel_size, mask_padding, qkv.dtype, chunk_axis(), _upcast(qkv))
    args = (qkv, qkv[..., channels:], qkv[..., 2 * channels :], c3, rel_row, rel_col, out, channels, lse)
    programs = config.programs(n * heads, height, width)
    _call(forward, programs, compile_only, *args, height, width, heads, num_warps=config.num_warps, **constexprs)


def _launch_backward(
    config: LaunchConfig,
    qkv: Tensor,
    rel_row: Tensor,
    rel_col: Tensor,
    out: Tensor,
    grad_out: Tensor,
    lse: Tensor,
    delta: Tensor,
    grad_qkv: Tensor,
    heads: int,
    kernel_size: int,
    mask_padding: bool,
    compile_only: bool = False,
) -> Tensor | None:
    """Both backward kernels of ``config``: fills ``grad_qkv`` and ``delta``; returns the summed
    ``(2·window_pad, padded d)`` table gradients (rows ``< window_pad``: row table; then the column table),
    or only compiles the kernels (``compile_only``, returns ``None``)."""
    n, height, width, c3 = qkv.shape
    channels = c3 // 3
    _, backward_query, backward_key = kernels_of(config)
    programs = config.programs(n * heads, height, width)
    grad_rel = torch.empty(
        1 if compile_only else programs, 2 * config.window_pad, config.padded_width, device=qkv.device, dtype=lse.dtype
    )
    constexprs = config.constexprs(kernel_size, mask_padding, qkv.dtype, chunk_axis(), _upcast(qkv))
    k, v = qkv[..., channels:], qkv[..., 2 * channels :]
    grad_k, grad_v = grad_qkv[..., channels:], grad_qkv[..., 2 * channels :]
    launch = dict(num_warps=config.num_warps, **constexprs)
    inputs = (qkv, k, v, c3)
    tables = (rel_row, rel_col)
    stats = (channels, lse, delta)  # grad_out's token stride, then the per-query softmax statistics
    shape = (height, width, heads)
    if config.path == TENSOR_CORE:  # the query kernel hands each query's relative logits to the key kernel
        rel_logits = torch.empty(
            1 if compile_only else n * heads * height * width, 2 * config.window_pad, device=qkv.device, dtype=lse.dtype
        )
        query_args = (*inputs, *tables, out, grad_out, *stats, rel_logits, grad_qkv, grad_rel, *shape)
        key_args = (*inputs, grad_out, *stats, rel_logits, grad_k, grad_v, *shape)
    else:
        query_args = (*inputs, *tables, out, grad_out, *stats, grad_qkv, grad_rel, *shape)
        key_args = (*inputs, *tables, grad_out, *stats, grad_k, grad_v, *shape)
    _call(backward_query, programs, compile_only, *query_args, **launch)
    _call(backward_key, programs, compile_only, *key_args, **launch)
    return None if compile_only else grad_rel.sum(0)


class _TritonLocalAttention(torch.autograd.Function):
    """Autograd wrapper: ``qkv (N, H, W, 3C) -> out (N, H, W, C)``."""

    @staticmethod
    def forward(ctx, qkv, rel_row, rel_col, heads, kernel_size, mask_padding):  # type: ignore[override]
        n, height, width, c3 = qkv.shape
        d = c3 // 3 // heads
        acc_dtype = torch.float64 if qkv.dtype == torch.float64 else torch.float32
        qkv = qkv.contiguous()
        rel_row_, rel_col_ = rel_row.to(acc_dtype).contiguous(), rel_col.to(acc_dtype).contiguous()
        out = qkv.new_empty(n, height, width, c3 // 3)
        lse = torch.empty(n * heads, height, width, device=qkv.device, dtype=acc_dtype)
        candidates = candidate_configs(d, qkv.dtype, kernel_size)

        def run(config: LaunchConfig, compile_only: bool = False) -> None:
            _launch_forward(config, qkv, rel_row_, rel_col_, out, lse, heads, kernel_size, mask_padding, compile_only)

        with _device_guard(qkv):
            key = shape_class("forward", qkv, d, kernel_size, mask_padding, height, width, candidates)
            run(choose_config(key, candidates, run, qkv.device))
        ctx.save_for_backward(qkv, rel_row_, rel_col_, out, lse)
        ctx.settings = (heads, kernel_size, mask_padding)
        ctx.table_dtypes = (rel_row.dtype, rel_col.dtype)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        qkv, rel_row_, rel_col_, out, lse = ctx.saved_tensors
        heads, kernel_size, mask_padding = ctx.settings
        n, height, width, c3 = qkv.shape
        d = c3 // 3 // heads
        grad_out = grad_out.to(qkv.dtype).contiguous()
        grad_qkv = torch.empty_like(qkv)
        delta = torch.empty_like(lse)
        candidates = candidate_configs(d, qkv.dtype, kernel_size)
        result = []

        def run(config: LaunchConfig, compile_only: bool = False) -> None:
            tables = _launch_backward(
                config,
                qkv,
                rel_row_,
                rel_col_,
                out,
                grad_out,
                lse,
                delta,
                grad_qkv,
                heads,
                kernel_size,
                mask_padding,
                compile_only,
            )
            if not compile_only:
                result[:] = [tables, config.window_pad]

        with _device_guard(qkv):
            key = shape_class("backward", qkv, d, kernel_size, mask_padding, height, width, candidates)
            run(choose_config(key, candidates, run, qkv.device))
        tables, window_pad = result
        half = d // 2
        grad_rel_row = tables[:kernel_size, :half]
        grad_rel_col = tables[window_pad : window_pad + kernel_size, half:d]
        row_dtype, col_dtype = ctx.table_dtypes
        return grad_qkv, grad_rel_row.to(row_dtype), grad_rel_col.to(col_dtype), None, None, None


def _project_token_major(x: Tensor, weight: Tensor) -> Tensor:
    """``(N, C_in, H, W) @ weight.T -> (N, H, W, 3C)`` in one GEMM that writes the token-major layout."""
    n, c_in, height, width = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.nn.functional.linear(x.permute(0, 2, 3, 1), weight)
    tokens = x.reshape(n, c_in, height * width).transpose(1, 2)  # (N, HW, C_in), a view
    qkv = torch.bmm(tokens, weight.t().unsqueeze(0).expand(n, -1, -1))
    return qkv.view(n, height, width, -1)


def local_attention_triton_fused(
    x: Tensor,
    weight: Tensor,
    rel_row: Tensor,
    rel_col: Tensor,
    heads: int,
    kernel_size: int,
    mask_padding: bool,
    scale: float,
) -> Tensor:
    """Projection and windowed attention: ``x (N, C_in, H, W)``, ``weight (3C, C_in)`` -> ``(N, C, H, W)``.

    ``weight`` stacks the query, key and value 1×1 weights; ``scale`` multiplies the queries. The result
    is a channels-last tensor (``(N, H, W, C)`` memory) seen as NCHW.
    """
    if not triton_available():
        raise RuntimeError("impl='triton' needs the triton package")
    if scale != 1.0:  # fold the query scale into the projection's weight
        queries = weight.shape[0] // 3
        weight = torch.cat([weight[:queries] * scale, weight[queries:]])
    qkv = _project_token_major(x, weight)
    out = _TritonLocalAttention.apply(qkv, rel_row, rel_col, heads, kernel_size, mask_padding)
    return out.permute(0, 3, 1, 2)


def local_attention_triton(
    q: Tensor, k: Tensor, v: Tensor, rel_row: Tensor, rel_col: Tensor, kernel_size: int, mask_padding: bool
) -> Tensor:
    """Windowed attention with the Triton kernels for ``(N, heads, d, H, W)`` inputs (see :mod:`.torch_paths`).

    Runs on CUDA tensors (and on CPU tensors when ``TRITON_INTERPRET=1`` was set before triton was
    imported). Operands are brought to the query's dtype; the relative tables are used in the
    accumulation dtype.
    """
    if not triton_available():
        raise RuntimeError("impl='triton' needs the triton package")
    n, heads, d, height, width = q.shape
    parts = [t.to(q.dtype).permute(0, 3, 4, 1, 2).reshape(n, height, width, heads * d) for t in (q, k, v)]
    out = _TritonLocalAttention.apply(torch.cat(parts, dim=-1), rel_row, rel_col, heads, kernel_size, mask_padding)
    return out.view(n, height, width, heads, d).permute(0, 3, 4, 1, 2)
