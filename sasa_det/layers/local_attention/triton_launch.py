"""SASA windowed attention as fused Triton kernels (``impl="triton"``, what ``impl="auto"`` picks on CUDA).

The layer calls :func:`local_attention_triton_fused`: one GEMM projects the input to queries, keys and
values in a token-major layout ``(N, H, W, 3C)`` (a pixel's channels of one head are contiguous, so one
thread holds a whole query), the kernels of :mod:`.triton_kernels` attend over each query's window, and
the output comes back as ``(N, H, W, C)``, handed on as an NCHW-shaped channels-last view (no copy).
The forward stores the output and one log-sum-exp per query; the backward recomputes the logits.

:func:`local_attention_triton` is the same attention for channel-major ``(N, heads, d, H, W)`` inputs (the
registry's common signature; it packs them into the token-major layout first).

Accumulation is float32 for float16/bfloat16/float32 inputs and float64 for float64 ones. Kernels are
compiled once per (dtype, head width, window, border mode), not per image size, and launched on the
inputs' device. Triton is imported on first use; with ``TRITON_INTERPRET=1`` set before that import the
kernels also run on CPU tensors, which is how the tests check them against the reference.
:func:`kernel_build_specs` describes every kernel for an ahead-of-time compile (the kernel report of
``tools/benchmark.py kernels``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "KernelBuildSpec",
    "LaunchConfig",
    "kernel_build_specs",
    "launch_config",
    "local_attention_triton",
    "local_attention_triton_fused",
    "supports_triton",
    "triton_available",
]

#: Largest head width the kernels take.
MAX_HEAD_WIDTH = 64

_kernels = None


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


def _get_kernels():
    """The kernels module; imports triton once."""
    global _kernels
    if _kernels is None:
        from . import triton_kernels

        _kernels = triton_kernels
    return _kernels


@dataclass(frozen=True)
class LaunchConfig:
    """Compile-time settings of one kernel set: tile, channel chunks, window padding, warps."""

    head_width: int
    vec: int  # channels per 16-byte chunk
    chunks: int  # chunks per thread
    split: int  # threads per pixel (head width padded to chunks·split·vec)
    window_pad: int  # kernel_size padded to a power of two, at least 8
    block_h: int
    block_w: int
    num_warps: int

    def constexprs(self, kernel_size: int, mask_padding: bool, acc, chunk_axis: int) -> dict:
        """The kernels' ``tl.constexpr`` arguments."""
        return {
            "KS": kernel_size, "KP": self.window_pad, "HD": self.head_width, "NCH": self.chunks, "SPLIT": self.split,
            "VEC": self.vec, "CHUNK_AXIS": chunk_axis,
            "MASK_PADDING": bool(mask_padding), "BLOCK_H": self.block_h, "BLOCK_W": self.block_w, "ACC": acc,
        }


def launch_config(head_width: int, dtype: torch.dtype, kernel_size: int) -> LaunchConfig:
    """Settings for a head width and input dtype: at most 16 channels per thread (a pixel's head over
    ``split`` threads when wider), 128 threads of 128/split pixels per program."""
    padded = 1 << (head_width - 1).bit_length()  # tl.arange needs powers of two
    split = max(1, padded // 16)
    per_thread = padded // split
    vec = min(per_thread, max(1, 16 // torch.empty((), dtype=dtype).element_size()))
    block_h, block_w = {1: (8, 16), 2: (8, 8), 4: (4, 8)}.get(split, (2, 8))
    window_pad = max(8, 1 << (kernel_size - 1).bit_length())  # 2·KP >= 16 rows for tl.dot on older Triton
    return LaunchConfig(head_width, vec, per_thread // vec, split, window_pad,
                        block_h, block_w, max(1, block_h * block_w * split // 32))


_chunk_axes: dict = {}


def chunk_axis(target=None) -> int:
    """The register-tile axis (0 or 2) that holds a thread's channel chunks for the installed Triton.

    Triton assigns threads to the axes of a tile in decreasing contiguity; among equally contiguous axes
    Triton <= 3.6 starts with the first, later versions with the last. The kernels need the pixel axis
    to get the threads before the chunk axis, so the chunks go where threads are given last. Found once
    per compile target by compiling a tiny probe (not run); 0 under the interpreter, where layouts do not
    exist.
    """
    import triton

    if os.environ.get("TRITON_INTERPRET") == "1":
        return 0
    if target is None:
        target = triton.runtime.driver.active.get_current_target()
    key = repr(target)
    if key not in _chunk_axes:
        try:
            from triton.compiler import ASTSource

            kernel = _get_kernels().layout_probe_kernel
            signature = {"ptr": "*fp32", "stride": "i32", "A": "constexpr", "B": "constexpr", "VEC": "constexpr"}
            source = ASTSource(fn=kernel, signature=signature, constexprs={"A": 2, "B": 128, "VEC": 4},
                               attrs={(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]]})
            ttgir = triton.compile(source, target=target, options={"num_warps": 4}).asm["ttgir"]
            threads = re.search(r"threadsPerWarp = \[(\d+), (\d+), (\d+)\]", ttgir)
            _chunk_axes[key] = 0 if int(threads.group(2)) == 32 else 2
        except Exception:  # an older compiler API: the rule of the versions it belongs to
            _chunk_axes[key] = 2
    return _chunk_axes[key]


def _acc(dtype: torch.dtype):
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32


def _device_guard(t: Tensor):
    """Launch on ``t``'s GPU, not the current one (several GPUs in one process)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _programs(n: int, heads: int, height: int, width: int, config: LaunchConfig) -> int:
    return n * heads * math.ceil(height / config.block_h) * math.ceil(width / config.block_w)


class _TritonLocalAttention(torch.autograd.Function):
    """Autograd wrapper: ``qkv (N, H, W, 3C) -> out (N, H, W, C)``."""

    @staticmethod
    def forward(ctx, qkv, rel_row, rel_col, heads, kernel_size, mask_padding):  # type: ignore[override]
        n, height, width, c3 = qkv.shape
        channels = c3 // 3
        d = channels // heads
        acc_dtype = torch.float64 if qkv.dtype == torch.float64 else torch.float32
        qkv = qkv.contiguous()
        rel_row_, rel_col_ = rel_row.to(acc_dtype).contiguous(), rel_col.to(acc_dtype).contiguous()
        out = qkv.new_empty(n, height, width, channels)
        lse = torch.empty(n * heads, height, width, device=qkv.device, dtype=acc_dtype)
        config = launch_config(d, qkv.dtype, kernel_size)
        grid = (_programs(n, heads, height, width, config),)
        with _device_guard(qkv):
            constexprs = config.constexprs(kernel_size, mask_padding, _acc(qkv.dtype), chunk_axis())
            _get_kernels().forward_kernel[grid](
                qkv, qkv[..., channels:], qkv[..., 2 * channels:], c3, rel_row_, rel_col_, out, channels, lse,
                height, width, heads, num_warps=config.num_warps, **constexprs)
        ctx.save_for_backward(qkv, rel_row_, rel_col_, out, lse)
        ctx.settings = (heads, kernel_size, mask_padding, config)
        ctx.table_dtypes = (rel_row.dtype, rel_col.dtype)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        qkv, rel_row_, rel_col_, out, lse = ctx.saved_tensors
        heads, kernel_size, mask_padding, config = ctx.settings
        n, height, width, c3 = qkv.shape
        channels = c3 // 3
        grad_out = grad_out.to(qkv.dtype).contiguous()
        grad_qkv = torch.empty_like(qkv)
        delta = torch.empty_like(lse)
        programs = _programs(n, heads, height, width, config)
        padded = config.chunks * config.split * config.vec
        grad_rel = torch.empty(programs, 2 * config.window_pad, padded, device=qkv.device, dtype=lse.dtype)
        kernels = _get_kernels()
        k, v = qkv[..., channels:], qkv[..., 2 * channels:]
        with _device_guard(qkv):
            constexprs = config.constexprs(kernel_size, mask_padding, _acc(qkv.dtype), chunk_axis())
            kernels.backward_query_kernel[(programs,)](
                qkv, k, v, c3, rel_row_, rel_col_, out, grad_out, channels, lse, delta, grad_qkv, grad_rel,
                height, width, heads, num_warps=config.num_warps, **constexprs)
            kernels.backward_key_kernel[(programs,)](
                qkv, k, v, c3, rel_row_, rel_col_, grad_out, channels, lse, delta,
                grad_qkv[..., channels:], grad_qkv[..., 2 * channels:], height, width, heads,
                num_warps=config.num_warps, **constexprs)
        tables = grad_rel.sum(0)  # (2·KP, padded head width): row table, then column table
        half = config.head_width // 2
        grad_rel_row = tables[:kernel_size, :half]
        grad_rel_col = tables[config.window_pad:config.window_pad + kernel_size, half:config.head_width]
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
    x: Tensor, weight: Tensor, rel_row: Tensor, rel_col: Tensor, heads: int, kernel_size: int,
    mask_padding: bool, scale: float,
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


@dataclass(frozen=True)
class KernelBuildSpec:
    """What an ahead-of-time compile of one kernel needs: the function, argument types, constants, warps.

    ``aligned`` names the arguments a launch specialises as divisible by 16 (pointers: 16-byte aligned).
    """

    name: str
    kernel: object
    signature: dict
    constexprs: dict
    aligned: tuple
    num_warps: int


def kernel_build_specs(target, dtype: torch.dtype, head_width: int, kernel_size: int = 7,
                       mask_padding: bool = False) -> list[KernelBuildSpec]:
    """The kernels one training step launches for ``dtype`` and ``head_width`` on a Triton ``GPUTarget``,
    typed as a launch would type them.

    Pointers are marked 16-byte aligned and the token strides divisible by 16, as Triton specialises
    them for the fused projection of a layer whose width is a multiple of 16.
    """
    kernels = _get_kernels()
    config = launch_config(head_width, dtype, kernel_size)
    constexprs = config.constexprs(kernel_size, mask_padding, _acc(dtype), chunk_axis(target))
    element = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.float64: "*fp64"}[dtype]
    acc = "*fp64" if dtype == torch.float64 else "*fp32"
    types = {
        "q_ptr": element, "k_ptr": element, "v_ptr": element, "out_ptr": element, "grad_out_ptr": element,
        "grad_q_ptr": element, "grad_k_ptr": element, "grad_v_ptr": element, "rel_row": acc, "rel_col": acc,
        "lse_ptr": acc, "delta_ptr": acc, "grad_rel_ptr": acc, "s_t": "i32", "o_t": "i32", "height": "i32",
        "width": "i32", "heads": "i32",
    }
    aligned = {name for name, kind in types.items() if kind.startswith("*")} | {"s_t", "o_t"}
    specs = []
    for name in ("forward_kernel", "backward_query_kernel", "backward_key_kernel"):
        fn = getattr(kernels, name)
        signature = {arg: ("constexpr" if arg in constexprs else types[arg]) for arg in fn.arg_names}
        used = {key: value for key, value in constexprs.items() if key in fn.arg_names}
        specs.append(KernelBuildSpec(name, fn, signature, used, tuple(a for a in fn.arg_names if a in aligned),
                                     config.num_warps))
    return specs
