"""The plain-PyTorch attention paths a model runs while it is exported to ONNX or TorchScript.

The fast paths (SASA's compiled CPU loop and Triton kernels, AA's FlexAttention) are custom kernels that
neither exporter can record. :func:`portable_attention_paths` switches every layer to a path made of standard
operators for the duration of a ``with`` block and restores the layers' own choice afterwards:

* :class:`LocalSelfAttention2d` -> ``"unfold"`` (:func:`.local_attention.torch_paths.local_attention_unfold`:
  ``F.unfold`` gathers, elementwise products, softmax). The ``"shift"`` path is a hand-written
  ``autograd.Function`` that the ONNX exporter cannot lower.
* :class:`AugmentedConv2d` -> ``"sdpa"`` (``scaled_dot_product_attention`` with the relative logits as a dense
  additive mask).
* :class:`SpatiallyAwareStem` has one path, blocked matrix products in plain PyTorch; nothing to switch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from .augmented_conv import AugmentedConv2d
from .local_attention import LocalSelfAttention2d
from .spatially_aware_stem import SpatiallyAwareStem

__all__ = ["EXPORT_AUGMENTED_ATTENTION_IMPL", "EXPORT_LOCAL_ATTENTION_IMPL", "portable_attention_paths"]

#: SASA implementation used while exporting.
EXPORT_LOCAL_ATTENTION_IMPL = "unfold"
#: AA attention implementation used while exporting.
EXPORT_AUGMENTED_ATTENTION_IMPL = "sdpa"


@contextmanager
def portable_attention_paths(model: nn.Module) -> Iterator[dict[str, str]]:
    """Run every attention layer of ``model`` on its exportable path inside the block.

    Yields, per kind of attention layer found in ``model``, the path it runs, e.g.
    ``{"sasa": "unfold (12 layers)", "aa": "sdpa (3 layers)"}``; restores each layer's setting on exit.
    """
    sasa = [m for m in model.modules() if isinstance(m, LocalSelfAttention2d)]
    aa = [m for m in model.modules() if isinstance(m, AugmentedConv2d)]
    stems = [m for m in model.modules() if isinstance(m, SpatiallyAwareStem)]
    saved = [(m, "impl", m.impl) for m in sasa] + [(m, "attention_impl", m.attention_impl) for m in aa]
    paths = {}
    if sasa:
        paths["sasa"] = f"{EXPORT_LOCAL_ATTENTION_IMPL} ({len(sasa)} layers)"
    if aa:
        paths["aa"] = f"{EXPORT_AUGMENTED_ATTENTION_IMPL} ({len(aa)} layers)"
    if stems:
        paths["attention stem"] = "blocked matmul, plain PyTorch (its only path)"
    try:
        for m in sasa:
            m.impl = EXPORT_LOCAL_ATTENTION_IMPL
        for m in aa:
            m.attention_impl = EXPORT_AUGMENTED_ATTENTION_IMPL
        yield paths
    finally:
        for m, name, value in saved:
            setattr(m, name, value)
