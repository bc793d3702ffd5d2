"""What an attention layer provides to the code that measures, draws, exports and loads models.

:class:`AttentionLayer` is a structural protocol: a module is an attention layer when it has the members
below, whatever its class. The FLOP counter (:func:`sasa_det.analysis.model_info.count_flops`), the attention
maps (:mod:`sasa_det.analysis.attention_maps`, ``tools/visualize_attention.py``), the export
(:func:`sasa_det.layers.export_paths.portable_attention_paths`) and weight loading
(:func:`sasa_det.backbones.weights.adapt_relative_tables`) find the layers of a model with
:func:`attention_layers` and ask them; none of them lists layer classes. A new layer that implements the
protocol is counted, drawn, exported and resized by all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NamedTuple, Optional, Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = ["AttentionLayer", "QueryAttention", "attention_layers", "attribute_set_to"]


class QueryAttention(NamedTuple):
    """The attention of one query position of a layer, per head.

    Attributes:
        weights: ``(heads, h, w)`` on the layer's attention map (see :meth:`AttentionLayer.attention_map_size`);
            zero at positions the query does not attend to.
        outside: ``(heads,)``, the weight on padded positions beyond the map that take part in the softmax
            (SASA with zero padding), so that ``weights`` sum to ``1 - outside``; ``None`` for a layer that
            attends only inside the map.
    """

    weights: Tensor
    outside: Optional[Tensor]


@runtime_checkable
class AttentionLayer(Protocol):
    """The members every attention layer of :mod:`sasa_det.layers` has (and a new one needs).

    Attributes:
        attention_kind: short name of the layer's kind, grouping layers in reports (``"sasa"``, ``"aa"``,
            ``"attention stem"``).
        heads: the number of attention heads.
    """

    attention_kind: str
    heads: int

    def attention_flops(self, height: int, width: int) -> int:
        """FLOPs (multiply-add = 2) of the products that are not convolutions or linear layers (``q·k``,
        relative logits, the weighted sum of values, ...) for one ``height × width`` input image."""
        ...

    def attention_map_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the map the queries and keys live on for a ``height × width`` input."""
        ...

    def attention_weights(self, x: Tensor, row: int, col: int) -> QueryAttention:
        """The attention of query ``(row, col)`` of that map for the layer's input ``x`` ``(1, C_in, H, W)``,
        computed explicitly from the layer's parameters (the fast paths never hold the weights)."""
        ...

    def portable_path(self) -> AbstractContextManager[str]:
        """A ``with`` block inside which the layer runs on standard operators only (what the ONNX and
        TorchScript exporters can record); it yields the name of that path and restores the layer's own
        choice on exit."""
        ...

    def resize_position_table(self, name: str, table: Tensor) -> Optional[Tensor]:
        """The parameter ``name`` of this layer from a layer built for another map size (``table``, e.g. read
        from a checkpoint), converted to this layer's size as the layer itself treats maps of another size;
        ``None`` when ``name`` is not a table sized by the map or ``table`` cannot be converted."""
        ...


def attention_layers(model: nn.Module) -> dict[str, AttentionLayer]:
    """``{qualified name: layer}`` of every :class:`AttentionLayer` in ``model`` (``model`` itself included,
    named ``""``), in module order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, AttentionLayer)}


@contextmanager
def attribute_set_to(module: nn.Module, name: str, value: Any) -> Iterator[Any]:
    """Set ``module.name`` to ``value`` inside the block (yields ``value``) and restore it on exit."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield value
    finally:
        setattr(module, name, saved)
