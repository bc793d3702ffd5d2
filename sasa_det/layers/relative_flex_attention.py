"""AA's global attention with 2-D relative logits through FlexAttention (no (HW)² logit or bias tensor).

The relative logit of query ``i`` and key ``j`` is ``q_i·r^W_{x_j-x_i} + q_i·r^H_{y_j-y_i}`` (Bello et al.
2019, Sec. 3.2). For every query it depends on the key only through the key's column and row, so two
per-query tables carry all of it: ``T^W[i, x'] = q_i·r^W_{x'-x_i}`` ``(HW, W)`` and
``T^H[i, y'] = q_i·r^H_{y'-y_i}`` ``(HW, H)``, O(HW·(H+W)) in all, built with the relative-to-absolute
trick. FlexAttention adds ``T^W[i, col(j)] + T^H[i, row(j)]`` to each score inside its fused kernel
(``col``/``row`` are index tensors, not captured integers), so neither an ``(HW, HW)`` bias nor an
``(HW, HW, d)`` embedding tensor is formed.

Head widths. AA's per-head widths are small (``d_k/N_h`` = 3, 6, 13 and ``d_v/N_h`` = 2, 3, 6 for the
presets), and the compiled kernel takes widths of at least 16 (Triton's ``tl.dot`` needs K >= 16 for
16-bit inputs, in the backward too). Queries, keys and values are zero-padded per head to
:func:`padded_width` before the call and the output is sliced back: the zero channels leave every
``q·k`` and the tables (computed from the unpadded queries) unchanged.

Compilation. The compiled FlexAttention is shared by all layers; the sequence length and table sizes are
marked dynamic, so one training with multi-scale inputs compiles once for training and once for
no-grad validation. :func:`flex_attention_usable` compiles and runs forward and backward once per
class of inputs (device, dtype, padded widths, grad mode) at first use; when that fails, the layer is
told to use SDPA and the reason is logged once as a warning. :func:`flex_attention_report` lists what
was found.

On CPU torch runs FlexAttention's forward only (eagerly, through its reference implementation); the
tests check what this module hands to the kernel against dense SDPA, forward and backward.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .relative_position import relative_logits_1d

logger = logging.getLogger(__name__)

__all__ = [
    "FLEX_MIN_WIDTH",
    "compiled_flex_attention",
    "flex_attention_available",
    "flex_attention_report",
    "flex_attention_usable",
    "flex_inputs",
    "nondeterministic_backward",
    "padded_width",
    "relative_attention_flex",
]

#: Smallest head width handed to the compiled kernel.
FLEX_MIN_WIDTH = 16

ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def flex_attention_available() -> bool:
    """True when this torch has ``torch.nn.attention.flex_attention`` (torch >= 2.5)."""
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def padded_width(width: int) -> int:
    """The head width the kernel gets: ``max(16, next power of two)``."""
    return max(FLEX_MIN_WIDTH, 1 << (width - 1).bit_length())


def _mark_dynamic(t: Tensor, *dims: int) -> None:
    mark = getattr(torch._dynamo, "maybe_mark_dynamic", None) or torch._dynamo.mark_dynamic
    for dim in dims:
        mark(t, dim)


@functools.cache
def compiled_flex_attention(backend: str = "inductor"):
    """``torch.compile(flex_attention, dynamic=True)``, one per backend (the tests count compiles with ``"eager"``)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True, backend=backend)


def flex_inputs(
    q: Tensor, k: Tensor, v: Tensor, rel_width: Tensor, rel_height: Tensor, height: int, width: int
) -> tuple[Tensor, Tensor, Tensor, ScoreMod]:
    """What goes to the kernel: zero-padded ``q, k, v`` and the ``score_mod`` adding the relative logits.

    Args:
        q: ``(N, heads, HW, d_k)`` queries, already scaled; k: ``(N, heads, HW, d_k)``;
            v: ``(N, heads, HW, d_v)``; positions flattened row-major (``i = y·W + x``).
        rel_width: ``(2W-1, d_k)``, rel_height: ``(2H-1, d_k)``, sized for this map.
    """
    n, heads, positions, dkh = q.shape
    dvh = v.shape[-1]
    q_map = q.reshape(n * heads, height, width, dkh)
    rel_width, rel_height = rel_width.to(q.dtype), rel_height.to(q.dtype)
    table_w = relative_logits_1d(q_map, rel_width)  # (B, H, W, W'): [b, y, x, x']
    table_h = relative_logits_1d(q_map.transpose(1, 2), rel_height).transpose(1, 2)  # (B, H, W, H'): [b, y, x, y']
    table_w = table_w.reshape(n, heads, positions, width).contiguous()
    table_h = table_h.reshape(n, heads, positions, height).contiguous()
    column_of = torch.arange(positions, device=q.device) % width
    row_of = torch.arange(positions, device=q.device) // width
    _mark_dynamic(table_w, 2, 3)
    _mark_dynamic(table_h, 2, 3)
    _mark_dynamic(column_of, 0)
    _mark_dynamic(row_of, 0)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + table_w[b, h, q_idx, column_of[kv_idx]] + table_h[b, h, q_idx, row_of[kv_idx]]

    q = F.pad(q, (0, padded_width(dkh) - dkh))
    k = F.pad(k, (0, padded_width(dkh) - dkh))
    v = F.pad(v, (0, padded_width(dvh) - dvh))
    for t in (q, k, v):
        _mark_dynamic(t, 2)
    return q, k, v, score_mod


def relative_attention_flex(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rel_width: Tensor,
    rel_height: Tensor,
    height: int,
    width: int,
    attend: Callable | None = None,
) -> Tensor:
    """Softmax attention with AA's relative logits added inside FlexAttention; shapes as in :func:`flex_inputs`.

    Returns ``(N, heads, HW, d_v)``. ``attend`` is the FlexAttention to call; by default the compiled
    kernel for CUDA inputs and FlexAttention's eager reference (forward only) for others.
    """
    from torch.nn.attention.flex_attention import flex_attention

    dvh = v.shape[-1]
    q, k, v, score_mod = flex_inputs(q, k, v, rel_width, rel_height, height, width)
    if attend is None:
        attend = compiled_flex_attention() if q.is_cuda else flex_attention
    return attend(q, k, v, score_mod=score_mod, scale=1.0)[..., :dvh]


_probes: dict[tuple, str | None] = {}


def _probe_input(shape: tuple[int, ...], like: Tensor, requires_grad: bool, flip: bool) -> Tensor:
    """Deterministic values in [-1, 1] (the probe must not draw from the training's random streams)."""
    count = 1
    for size in shape:
        count *= size
    values = torch.linspace(-1, 1, count, device=like.device, dtype=like.dtype).reshape(shape)
    return (values.flip(0) if flip else values).requires_grad_(requires_grad)


def _input_class(q: Tensor, v: Tensor) -> tuple:
    return (
        str(q.device),
        str(q.dtype),
        padded_width(q.shape[-1]),
        padded_width(v.shape[-1]),
        torch.is_grad_enabled(),
        torch.are_deterministic_algorithms_enabled(),
    )


def nondeterministic_backward(q: Tensor) -> str | None:
    """Why FlexAttention cannot serve a deterministic run here (``None`` when it can).

    Its compiled backward scatters the gradients of tensors captured by ``score_mod`` (our relative-logit
    tables) with atomic adds, whose order varies from run to run; with deterministic algorithms on, CUDA
    and gradients needed, the relative attention must go to SDPA instead.
    """
    if q.is_cuda and torch.is_grad_enabled() and torch.are_deterministic_algorithms_enabled():
        return (
            "deterministic algorithms are on, and FlexAttention's backward adds the relative tables' "
            "gradients with atomic adds (run-to-run differences)"
        )
    return None


def flex_attention_usable(q: Tensor, v: Tensor) -> bool:
    """Whether the compiled kernel runs inputs like ``q``, ``v`` (forward, and backward under grad mode).

    Tried once per input class on a small map at first use (compiling the kernel); a failure is logged
    once as a warning naming the reason, and ``False`` is returned from then on.
    """
    key = _input_class(q, v)
    if key not in _probes and nondeterministic_backward(q) is not None:
        _probes[key] = nondeterministic_backward(q)
        logger.warning(
            "AugmentedConv2d: FlexAttention is not used for %s %s: %s. The relative attention runs on "
            "SDPA with a dense (N, heads, HW, HW) mask, which needs O((HW)^2) memory instead of O(HW·d).",
            q.device,
            q.dtype,
            _probes[key],
        )
    if key not in _probes:
        requires_grad = torch.is_grad_enabled()
        try:
            side, dkh, dvh = 8, q.shape[-1], v.shape[-1]
            shapes = [(1, 1, side * side, dkh)] * 2 + [(1, 1, side * side, dvh)] + [(2 * side - 1, dkh)] * 2
            inputs = [_probe_input(shape, q, requires_grad, flip=index % 2 == 1) for index, shape in enumerate(shapes)]
            out = relative_attention_flex(*inputs, side, side)
            if requires_grad:
                out.sum().backward()
            if q.is_cuda:
                torch.cuda.synchronize(q.device)
            _probes[key] = None
            logger.info(
                "AugmentedConv2d: relative attention runs on FlexAttention for %s %s (head widths d_k %d, "
                "d_v %d padded to %d, %d).",
                q.device,
                q.dtype,
                dkh,
                dvh,
                padded_width(dkh),
                padded_width(dvh),
            )
        except Exception as error:  # a compiler or kernel limit of this torch/GPU
            _probes[key] = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            logger.warning(
                "AugmentedConv2d: FlexAttention cannot run %s %s inputs (%s). The relative attention falls back "
                "to SDPA with a dense (N, heads, HW, HW) mask, which needs O((HW)^2) memory instead of O(HW·d).",
                q.device,
                q.dtype,
                _probes[key],
            )
    return _probes[key] is None


def flex_attention_report() -> list[dict]:
    """Every input class tried so far: ``{"device", "dtype", "d_k", "d_v", "grad", "deterministic", "usable",
    "error"}``."""
    return [
        {
            "device": device,
            "dtype": dtype,
            "d_k": dk,
            "d_v": dv,
            "grad": grad,
            "deterministic": deterministic,
            "usable": error is None,
            "error": error,
        }
        for (device, dtype, dk, dv, grad, deterministic), error in _probes.items()
    ]
