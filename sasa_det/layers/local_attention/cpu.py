"""SASA windowed attention on CPU as a compiled loop (``impl="cpp"``, what ``impl="auto"`` picks on CPU).

The C++ source (``csrc/local_attention_cpu.cpp``) is compiled on first use with
:func:`torch.utils.cpp_extension.load` (a C++ compiler and ninja are needed; the build takes about 30 s) into a
folder under ``TORCH_EXTENSIONS_DIR`` named by a hash of the source, the flags, torch and Python
(:mod:`sasa_det.layers.cpp_extension_cache`): checkouts with the same source share one build, and a current
build is imported without invoking the compiler. When the extension cannot be built the layer falls back to the
``"shift"`` path (a warning says why).

Each training step enters torch's intra-op thread pool three times (forward; backward by queries; backward by
keys) instead of once per window offset. A task is one image row: its k² rows of logits stay in cache, every
loop runs contiguously along the row (vectorised), and no (k², d, H, W) temporaries are formed; only the
(N·heads, k², H, W) attention weights are kept for the backward.

Half-precision inputs (CPU autocast) are computed in float32 and returned in their dtype.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from sasa_det.layers.cpp_extension_cache import extension_build, load_extension

logger = logging.getLogger(__name__)

__all__ = ["cpp_extension_available", "local_attention_cpp", "supports_cpp"]

_SOURCE = Path(__file__).with_name("csrc") / "local_attention_cpu.cpp"
_PREFIX = "sasa_local_attention_cpu"
_extension = None
_failure: str | None = None


def _build_options() -> list[tuple[list[str], list[str]]]:
    """(compile flags, link flags) to try in order: with OpenMP first, then without.

    ``-fopenmp`` makes ``at::parallel_for`` use torch's intra-op threads: the extension binds to the
    ``libgomp.so.1`` torch has already loaded, so one OpenMP runtime serves both. No ``-ffast-math``:
    its vector ``exp`` (about 25 % off the forward) rounds differently from the scalar one used for the
    loop remainders, whose extent depends on buffer alignment, which made results vary from run to run.
    """
    capability = torch.backends.cpu.get_cpu_capability()  # what torch itself dispatches to here
    isa = ["-mavx2", "-mfma"] if capability in ("AVX2", "AVX512") else []
    return [(["-O3", "-fopenmp", *isa], ["-fopenmp"]), (["-O3", *isa], [])]


def _put_ninja_on_path() -> None:
    """torch builds with the ``ninja`` program; the ``ninja`` package (a dependency) ships one in its own folder,
    which is not on ``PATH`` when the environment's python is run without activating it."""
    try:
        import ninja
    except ImportError:
        return
    folder = getattr(ninja, "BIN_DIR", None)
    if folder and folder not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")


def _load_extension():
    """The compiled module, building it on first call; ``None`` (and a logged warning) if it cannot be built.

    A current build of either option (:mod:`sasa_det.layers.cpp_extension_cache`) is imported as it is; only
    when there is none is one built, with OpenMP first.
    """
    global _extension, _failure
    if _extension is None and _failure is None:
        builds = [(extension_build(_PREFIX, _SOURCE, *flags), *flags) for flags in _build_options()]
        current = [option for option in builds if option[0].is_current]
        if not current:
            _put_ninja_on_path()
            logger.info(
                "Building the SASA CPU extension in %s (about 30 s, once per source and torch version).",
                builds[0][0].directory,
            )
        errors = []
        for build, cflags, ldflags in current + [option for option in builds if option not in current]:
            try:
                _extension, _ = load_extension(build, _SOURCE, cflags, ldflags)
                break
            except Exception as error:  # no compiler, no ninja, no libmvec, read-only cache, ...
                errors.append(f"{type(error).__name__}: {error}")
        else:
            _failure = "; ".join(errors)
            logger.warning("SASA CPU extension unavailable (%s); using the 'shift' implementation.", _failure)
    return _extension


def cpp_extension_available() -> bool:
    """True when the compiled CPU kernel is (or can be) built and loaded."""
    return _load_extension() is not None


def supports_cpp(q: Tensor) -> bool:
    """The compiled kernel runs CPU tensors of any floating dtype (half types through float32)."""
    return q.device.type == "cpu" and q.is_floating_point() and cpp_extension_available()


def _planes(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``(N, heads, d, H, W) -> (N·heads, d, H, W)`` contiguous in ``dtype``."""
    n, heads, d, height, width = t.shape
    return t.to(dtype).reshape(n * heads, d, height, width).contiguous()


class _CppLocalAttention(torch.autograd.Function):
    """Autograd wrapper of the compiled forward and backward passes."""

    @staticmethod
    def forward(ctx, q, k, v, rel_row, rel_col, kernel_size, mask_padding):  # type: ignore[override]
        dtype = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
        q_, k_, v_ = (_planes(t, dtype) for t in (q, k, v))
        rel_row_, rel_col_ = rel_row.to(dtype).contiguous(), rel_col.to(dtype).contiguous()
        out, attn = _load_extension().forward(q_, k_, v_, rel_row_, rel_col_, kernel_size, mask_padding)
        ctx.save_for_backward(q_, k_, v_, rel_row_, rel_col_, attn)
        ctx.kernel_size = kernel_size
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, rel_row.dtype, rel_col.dtype)
        return out.view(q.shape).to(q.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        q_, k_, v_, rel_row_, rel_col_, attn = ctx.saved_tensors
        kernel_size = ctx.kernel_size
        shape = grad_out.shape
        grad_q, grad_k, grad_v, grad_logits = _load_extension().backward(
            _planes(grad_out, q_.dtype), q_, k_, v_, rel_row_, rel_col_, attn, kernel_size
        )
        half = q_.shape[1] // 2
        grad_logits = grad_logits.view(q_.shape[0], kernel_size, kernel_size, *q_.shape[2:])  # (B, k_a, k_c, H, W)
        grad_rel_row = torch.einsum("baij,bcij->ac", grad_logits.sum(2), q_[:, :half])
        grad_rel_col = torch.einsum("baij,bcij->ac", grad_logits.sum(1), q_[:, half:])
        grads = (grad_q.view(shape), grad_k.view(shape), grad_v.view(shape), grad_rel_row, grad_rel_col)
        return (*(grad.to(dtype) for grad, dtype in zip(grads, ctx.dtypes)), None, None)


def local_attention_cpp(
    q: Tensor, k: Tensor, v: Tensor, rel_row: Tensor, rel_col: Tensor, kernel_size: int, mask_padding: bool
) -> Tensor:
    """Windowed attention with the compiled CPU loop; shapes as in :mod:`.torch_paths`.

    Raises ``RuntimeError`` when the extension cannot be built (``impl="auto"`` then uses ``"shift"``).
    """
    if _load_extension() is None:
        raise RuntimeError(f"the SASA CPU extension could not be built: {_failure}")
    return _CppLocalAttention.apply(q, k, v, rel_row, rel_col, kernel_size, mask_padding)
