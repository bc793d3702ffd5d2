"""Launch settings of the SASA Triton kernels: the candidates for one head width and dtype, and their compile specs.

Two kernel families compute the same attention (:mod:`.triton_kernels` on CUDA cores,
:mod:`.triton_tensor_core_kernels` on tensor cores); each has a small set of tile sizes and warp counts.
:func:`candidate_configs` lists what may run for a head width and dtype; :mod:`.triton_autotune` times
them on the first inputs of each shape class and keeps the fastest. :func:`kernel_build_specs` types
every candidate's kernels as a launch would, for an ahead-of-time compile (the kernel report of
``tools/benchmark.py kernels``).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = [
    "CUDA_CORE",
    "CUDA_CORE_TILES",
    "KernelBuildSpec",
    "LaunchConfig",
    "PATH_ENV",
    "TENSOR_CORE",
    "TENSOR_CORE_MIN_WIDTH",
    "candidate_configs",
    "chunk_axis",
    "kernel_build_specs",
    "kernel_family",
    "launch_config",
]

CUDA_CORE = "cuda_core"
TENSOR_CORE = "tensor_core"
#: Narrowest head width for which the tensor-core kernels are candidates (16-bit inputs). Below it a
#: product's K dimension is too short to pay for the 4.6× extra logits of the halo tiles.
TENSOR_CORE_MIN_WIDTH = 32
#: Environment variable that restricts the kernels to one family (``cuda_core`` or ``tensor_core``), for
#: benchmarks and tests; unset, the autotuner chooses among both where both apply.
PATH_ENV = "SASA_TRITON_PATH"


@dataclass(frozen=True)
class LaunchConfig:
    """Compile-time settings of one kernel set.

    Attributes:
        path: ``"cuda_core"`` or ``"tensor_core"``.
        head_width: channels per head ``d``; ``padded_width`` is ``d`` rounded up to a power of two.
        window_pad: kernel_size padded to a power of two, at least 8 (the table-gradient products need 16 rows).
        block_h, block_w: the query (or key) tile of one program; num_warps: its warps.
        vec, chunks, split: CUDA-core register tiling (channels per 16-byte load, loads per thread,
            threads per pixel); 0 for tensor cores.
        halo_width: tensor cores: keys per halo row (``block_w + k - 1`` padded to a power of two); 0 otherwise.
    """

    path: str
    head_width: int
    padded_width: int
    window_pad: int
    block_h: int
    block_w: int
    num_warps: int
    vec: int = 0
    chunks: int = 0
    split: int = 0
    halo_width: int = 0

    @property
    def label(self) -> str:
        """Short name, e.g. ``cuda_core 8x16 w4``."""
        return f"{self.path} {self.block_h}x{self.block_w} w{self.num_warps}"

    def constexprs(
        self, kernel_size: int, mask_padding: bool, dtype: torch.dtype, chunk_axis: int = 0, upcast: bool = False
    ) -> dict:
        """The kernels' ``tl.constexpr`` arguments for inputs of ``dtype`` (``upcast``: tensor-core products in
        the accumulation dtype, for the interpreter)."""
        acc = accumulator(dtype)
        common = {
            "KS": kernel_size,
            "KP": self.window_pad,
            "HD": self.head_width,
            "MASK_PADDING": bool(mask_padding),
            "BLOCK_H": self.block_h,
            "BLOCK_W": self.block_w,
            "ACC": acc,
        }
        if self.path == TENSOR_CORE:
            auxiliary = "ieee" if dtype in (torch.float32, torch.float64) else "tf32x3"
            return {**common, "D": self.padded_width, "NK": self.halo_width, "UPCAST": bool(upcast), "AUX": auxiliary}
        return {**common, "NCH": self.chunks, "SPLIT": self.split, "VEC": self.vec, "CHUNK_AXIS": chunk_axis}

    def programs(self, planes: int, height: int, width: int) -> int:
        """Programs of one launch over ``planes`` (N·heads) maps of ``height × width``."""
        return planes * -(-height // self.block_h) * -(-width // self.block_w)


@contextlib.contextmanager
def kernel_family(path: str | None) -> Iterator[None]:
    """For the duration, :data:`PATH_ENV` set to ``path`` (one kernel family), or unset (``None``: the
    autotuner chooses among both); the previous value is restored afterwards."""
    previous = os.environ.pop(PATH_ENV, None)
    if path is not None:
        os.environ[PATH_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(PATH_ENV, None)
        if previous is not None:
            os.environ[PATH_ENV] = previous


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _window_pad(kernel_size: int) -> int:
    return max(8, _pow2(kernel_size))


#: CUDA-core tiles ``(block_h, block_w)`` by threads per pixel: the base tile, then the same number of
#: threads in another shape (a different halo per tile). Both on 4 warps: with 8, ptxas caps some kernels
#: at 128 registers and they spill (the d = 16 and d = 64 forwards).
CUDA_CORE_TILES = {1: [(8, 16), (16, 8)], 2: [(8, 8), (4, 16)], 4: [(4, 8), (2, 16)]}


def _cuda_core(head_width: int, dtype: torch.dtype, kernel_size: int, variant: int) -> LaunchConfig:
    """At most 16 channels per thread (a pixel's head over ``split`` threads when wider), one pixel's
    share per thread; tile ``variant`` of :data:`CUDA_CORE_TILES`."""
    padded = _pow2(head_width)
    split = max(1, padded // 16)
    per_thread = padded // split
    vec = min(per_thread, max(1, 16 // torch.empty((), dtype=dtype).element_size()))
    block_h, block_w = CUDA_CORE_TILES.get(split, [(2, 8), (1, 16)])[variant]
    return LaunchConfig(
        CUDA_CORE,
        head_width,
        padded,
        _window_pad(kernel_size),
        block_h,
        block_w,
        max(1, block_h * block_w * split // 32),
        vec,
        per_thread // vec,
        split,
    )


def _tensor_core(head_width: int, kernel_size: int, block_h: int, block_w: int, num_warps: int) -> LaunchConfig:
    return LaunchConfig(
        TENSOR_CORE,
        head_width,
        max(16, _pow2(head_width)),
        _window_pad(kernel_size),
        block_h,
        block_w,
        num_warps,
        halo_width=max(16, _pow2(block_w + kernel_size - 1)),
    )


def launch_config(head_width: int, dtype: torch.dtype, kernel_size: int) -> LaunchConfig:
    """The first CUDA-core candidate (what runs without timing: under the interpreter, or when forced)."""
    return _cuda_core(head_width, dtype, kernel_size, 0)


def candidate_configs(
    head_width: int, dtype: torch.dtype, kernel_size: int, path: str | None = None
) -> list[LaunchConfig]:
    """What may run for this head width and dtype, the default first.

    CUDA cores: the two tiles of :data:`CUDA_CORE_TILES`. Tensor cores (16-bit inputs
    with ``d >= TENSOR_CORE_MIN_WIDTH``, or any dtype with ``d >= 16`` when ``path="tensor_core"`` is
    forced): 8×8 queries on 4 warps and 16×8 on 8 warps. ``path`` (default: :data:`PATH_ENV`) keeps one
    family where it applies (a forced ``"tensor_core"`` on a head narrower than 16 runs the CUDA-core kernels).
    """
    path = path or os.environ.get(PATH_ENV) or None
    if path not in (None, CUDA_CORE, TENSOR_CORE):
        raise ValueError(f"{PATH_ENV}={path!r}: choose {CUDA_CORE!r} or {TENSOR_CORE!r}")
    cuda_core = [_cuda_core(head_width, dtype, kernel_size, 0), _cuda_core(head_width, dtype, kernel_size, 1)]
    if path == TENSOR_CORE:
        tensor_core = head_width >= 16  # forced: any dtype (exact products for float32/64)
    else:
        tensor_core = dtype in (torch.float16, torch.bfloat16) and head_width >= TENSOR_CORE_MIN_WIDTH and path is None
    if not tensor_core:
        return cuda_core  # also where tensor cores were asked for but the head is too narrow for their products
    tensor_core_configs = [
        _tensor_core(head_width, kernel_size, 8, 8, 4),
        _tensor_core(head_width, kernel_size, 16, 8, 8),
    ]
    return tensor_core_configs if path == TENSOR_CORE else cuda_core + tensor_core_configs


_chunk_axes: dict = {}


def chunk_axis(target=None) -> int:
    """The register-tile axis (0 or 2) that holds a thread's channel chunks for the installed Triton.

    Triton assigns threads to the axes of a tile in decreasing contiguity; among equally contiguous axes
    Triton <= 3.6 starts with the first, later versions with the last. The CUDA-core kernels need the
    pixel axis to get the threads before the chunk axis, so the chunks go where threads are given last.
    Found once per compile target by compiling a tiny probe (not run); 0 under the interpreter, where
    layouts do not exist.
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

            from . import triton_kernels

            signature = {"ptr": "*fp32", "stride": "i32", "A": "constexpr", "B": "constexpr", "VEC": "constexpr"}
            source = ASTSource(
                fn=triton_kernels.layout_probe_kernel,
                signature=signature,
                constexprs={"A": 2, "B": 128, "VEC": 4},
                attrs={(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]]},
            )
            ttgir = triton.compile(source, target=target, options={"num_warps": 4, "enable_fp_fusion": True}).asm[
                "ttgir"
            ]
            threads = re.search(r"threadsPerWarp = \[(\d+), (\d+), (\d+)\]", ttgir)
            _chunk_axes[key] = 0 if int(threads.group(2)) == 32 else 2
        except Exception:  # an older compiler API: the rule of the versions it belongs to
            _chunk_axes[key] = 2
    return _chunk_axes[key]


def accumulator(dtype: torch.dtype):
    """The Triton accumulation dtype for inputs of ``dtype``: float64 for float64, float32 otherwise."""
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32


def kernels_of(config: LaunchConfig):
    """``(forward, backward_query, backward_key)`` kernels of ``config``'s family (imports triton)."""
    if config.path == TENSOR_CORE:
        from . import triton_tensor_core_kernels as tc

        return tc.forward_tc_kernel, tc.backward_query_tc_kernel, tc.backward_key_tc_kernel
    from . import triton_kernels as cc

    return cc.forward_kernel, cc.backward_query_kernel, cc.backward_key_kernel


@dataclass(frozen=True)
class KernelBuildSpec:
    """What an ahead-of-time compile of one kernel needs: the function, argument types, constants, warps.

    ``aligned`` names the arguments a launch specialises as divisible by 16 (pointers: 16-byte aligned).
    """

    name: str
    config: LaunchConfig
    kernel: object
    signature: dict
    constexprs: dict
    aligned: tuple
    num_warps: int


def kernel_build_specs(
    target,
    dtype: torch.dtype,
    head_width: int,
    kernel_size: int = 7,
    mask_padding: bool = False,
    path: str | None = None,
) -> list[KernelBuildSpec]:
    """The kernels a training step may launch for ``dtype`` and ``head_width`` on a Triton ``GPUTarget``
    (every candidate of :func:`candidate_configs`), typed as a launch would type them.

    Pointers are marked 16-byte aligned and the token strides divisible by 16, as Triton specialises
    them for the fused projection of a layer whose width is a multiple of 16.
    """
    element = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.float64: "*fp64"}[dtype]
    acc = "*fp64" if dtype == torch.float64 else "*fp32"
    types = {
        "q_ptr": element,
        "k_ptr": element,
        "v_ptr": element,
        "out_ptr": element,
        "grad_out_ptr": element,
        "grad_q_ptr": element,
        "grad_k_ptr": element,
        "grad_v_ptr": element,
        "rel_row": acc,
        "rel_col": acc,
        "lse_ptr": acc,
        "delta_ptr": acc,
        "grad_rel_ptr": acc,
        "rel_logits_ptr": acc,
        "s_t": "i32",
        "o_t": "i32",
        "height": "i32",
        "width": "i32",
        "heads": "i32",
    }
    aligned = {name for name, kind in types.items() if kind.startswith("*")} | {"s_t", "o_t"}
    specs = []
    for config in candidate_configs(head_width, dtype, kernel_size, path):
        constexprs = config.constexprs(kernel_size, mask_padding, dtype, chunk_axis(target))
        for fn in kernels_of(config):
            signature = {arg: ("constexpr" if arg in constexprs else types[arg]) for arg in fn.arg_names}
            used = {key: value for key, value in constexprs.items() if key in fn.arg_names}
            specs.append(
                KernelBuildSpec(
                    fn.fn.__name__,
                    config,
                    fn,
                    signature,
                    used,
                    tuple(a for a in fn.arg_names if a in aligned),
                    config.num_warps,
                )
            )
    return specs
