"""The implementations of SASA's windowed attention and how a layer chooses among them.

Built in (in this order):

* ``"unfold"``, ``"shift"``, ``"halo"`` -- plain PyTorch (:mod:`.torch_paths`); ``"shift"`` is the portable
  fallback on any device.
* ``"cpp"`` -- the CPU default: a compiled loop (:mod:`.cpu`, built on first use); ``impl="auto"`` falls
  back to ``"shift"`` when it cannot be built.
* ``"triton"`` -- the CUDA default: fused Triton kernels (:mod:`.triton_launch`) on a token-major
  projection, with a backward that recomputes the logits.

The slow dense reference (:func:`sasa_det.layers.reference.local_attention_reference`) is registered as
``"reference"`` by the test suite only: production code never selects it. Further kernels plug in with
:func:`register_local_attention_impl` and a ``supports`` predicate; ``impl="auto"`` picks the first
implementation in :data:`AUTO_PREFERENCE` that supports the inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from torch import Tensor

from .cpu import local_attention_cpp, supports_cpp
from .torch_paths import local_attention_halo, local_attention_shifted, local_attention_unfold
from .triton_launch import local_attention_triton, local_attention_triton_fused, supports_triton

__all__ = [
    "AUTO_PREFERENCE",
    "FusedLocalAttentionFn",
    "LocalAttentionFn",
    "LocalAttentionImpl",
    "available_local_attention_impls",
    "register_local_attention_impl",
    "resolve_local_attention_impl",
]

#: ``fn(q, k, v, rel_row, rel_col, kernel_size, mask_padding) -> out``, all ``(N, heads, d, H, W)``
#: except the tables ``(k, d/2)`` (see :mod:`.torch_paths`).
LocalAttentionFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, int, bool], Tensor]

#: ``fused(x, qkv_weight, rel_row, rel_col, heads, kernel_size, mask_padding, scale) -> (N, C, H, W)``:
#: projection and attention from the layer input ``x`` ``(N, C_in, H, W)`` and the stacked
#: query/key/value weight ``(3C, C_in)``; ``scale`` multiplies the queries.
FusedLocalAttentionFn = Callable[[Tensor, Tensor, Tensor, Tensor, int, int, bool, float], Tensor]


def _always(_: Tensor) -> bool:
    return True


@dataclass(frozen=True)
class LocalAttentionImpl:
    """A registered implementation.

    Attributes:
        name: what ``impl=`` selects it by.
        fn: the attention on projected ``q, k, v`` (:data:`LocalAttentionFn`).
        supports: ``supports(q)`` says whether it can run ``q`` (device, dtype, head width).
        fused: optional :data:`FusedLocalAttentionFn` that the layer calls instead of projecting
            itself, for implementations that want their own memory layout.
    """

    name: str
    fn: LocalAttentionFn
    supports: Callable[[Tensor], bool] = _always
    fused: Optional[FusedLocalAttentionFn] = None


_REGISTRY: dict[str, LocalAttentionImpl] = {
    "unfold": LocalAttentionImpl("unfold", local_attention_unfold),
    "shift": LocalAttentionImpl("shift", local_attention_shifted),
    "halo": LocalAttentionImpl("halo", local_attention_halo),
    "cpp": LocalAttentionImpl("cpp", local_attention_cpp, supports_cpp),
    "triton": LocalAttentionImpl("triton", local_attention_triton, supports_triton, local_attention_triton_fused),
}

#: Order in which ``impl="auto"`` tries implementations (names not registered are skipped).
AUTO_PREFERENCE: list[str] = ["triton", "cpp", "shift"]


def register_local_attention_impl(
    name: str,
    fn: LocalAttentionFn,
    supports: Callable[[Tensor], bool] = _always,
    fused: Optional[FusedLocalAttentionFn] = None,
) -> None:
    """Register ``fn`` under ``name`` (replacing an earlier one); ``supports(q)`` says if it can run."""
    if name == "auto":
        raise ValueError("'auto' is reserved for automatic selection; choose another name")
    _REGISTRY[name] = LocalAttentionImpl(name, fn, supports, fused)


def available_local_attention_impls() -> list[str]:
    """Names accepted by ``LocalSelfAttention2d(impl=...)``, ``"auto"`` included."""
    return ["auto", *_REGISTRY]


def resolve_local_attention_impl(name: str, q: Tensor | None = None) -> LocalAttentionImpl:
    """The implementation for ``name``; ``"auto"`` picks by :data:`AUTO_PREFERENCE` for ``q``.

    ``q`` only needs the device, dtype and shape ``(N, heads, d, H, W)`` of the queries (an expanded
    empty tensor will do).
    """
    if name == "auto":
        for candidate in AUTO_PREFERENCE:
            impl = _REGISTRY.get(candidate)
            if impl is not None and (q is None or impl.supports(q)):
                return impl
        return _REGISTRY["shift"]
    if name not in _REGISTRY:
        raise ValueError(f"unknown local attention impl {name!r}; choose one of {available_local_attention_impls()}")
    impl = _REGISTRY[name]
    if q is not None and not impl.supports(q):
        raise ValueError(
            f"local attention impl {name!r} does not support {q.device.type} {q.dtype} inputs; use impl='auto'"
        )
    return impl
