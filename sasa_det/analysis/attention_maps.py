"""Attention weights of one query pixel in an attention layer of a detector, mapped back to image pixels.

Forward hooks capture the input of each attention layer (every
:class:`~sasa_det.layers.attention_layer.AttentionLayer`: SASA, AA, the attention stem, or a layer of yours)
during an ordinary forward pass; the weights of the chosen query are then recomputed from that input by the
layer's own ``attention_weights`` (the layers' fast paths never materialise the weights and are left
untouched). SASA's weights live in the k×k window around the query, with the mass on zero-padded positions
beyond the map reported as ``outside``; AA's over the whole (pooled, when the layer pools) map; the stem's
in the query's block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sasa_det.layers.attention_layer import AttentionLayer, QueryAttention, attention_layers

__all__ = [
    "AttentionMap",
    "attention_layers",
    "augmented_attention_weights",
    "capture_layer_inputs",
    "compute_attention_map",
    "local_attention_weights",
]


def local_attention_weights(layer: AttentionLayer, x: Tensor, row: int, col: int) -> QueryAttention:
    """SASA attention of query ``(row, col)`` of input ``x`` ``(1, C_in, H, W)``: ``(weights, outside)``,
    ``weights`` ``(heads, H, W)`` (see :meth:`~sasa_det.layers.LocalSelfAttention2d.attention_weights`)."""
    return layer.attention_weights(x, row, col)


def augmented_attention_weights(layer: AttentionLayer, x: Tensor, row: int, col: int) -> Tensor:
    """AA attention of query ``(row, col)`` of the attention map for input ``x`` ``(1, C_in, H, W)``:
    ``(heads, h, w)`` (see :meth:`~sasa_det.layers.AugmentedConv2d.attention_weights`)."""
    return layer.attention_weights(x, row, col).weights


@dataclass
class CapturedForward:
    """What one detector forward pass showed: layer inputs, sizes, predictions.

    Attributes:
        inputs: ``{layer name: input (1, C, H, W)}``.
        resized: ``(h, w)`` of the image after the detector's resize; ``padded``: the batch tensor's size.
        prediction: the detector's output for the image.
    """

    inputs: dict[str, Tensor]
    resized: tuple[int, int]
    padded: tuple[int, int]
    prediction: dict[str, Tensor]


@torch.no_grad()
def capture_layer_inputs(detector: nn.Module, image: Tensor, names: Optional[Sequence[str]] = None) -> CapturedForward:
    """Run a torchvision detector (eval mode) on one ``[3, H, W]`` image, keeping the inputs of the
    attention layers ``names`` (default: all) and the resize the detector applied."""
    layers = attention_layers(detector)
    chosen = list(layers) if names is None else list(names)
    unknown = [n for n in chosen if n not in layers]
    if unknown:
        raise ValueError(f"not an attention layer: {unknown}; the attention layers are {list(layers)}")
    inputs: dict[str, Tensor] = {}
    sizes: dict[str, tuple] = {}
    handles = [
        layers[n].register_forward_hook(lambda m, args, out, n=n: inputs.__setitem__(n, args[0].detach()))
        for n in chosen
    ]
    handles.append(
        detector.transform.register_forward_hook(
            lambda m, args, out: sizes.update(
                resized=tuple(out[0].image_sizes[0]), padded=tuple(out[0].tensors.shape[-2:])
            )
        )
    )
    try:
        prediction = detector([image.to(next(detector.parameters()).device)])[0]
    finally:
        for handle in handles:
            handle.remove()
    return CapturedForward(inputs, sizes["resized"], sizes["padded"], {k: v.cpu() for k, v in prediction.items()})


@dataclass
class AttentionMap:
    """Attention of one query pixel, per head, over the original image's pixels.

    Attributes:
        weights: ``(heads, H, W)``: each layer position's weight painted over the image pixels it covers.
        grid_weights: ``(heads, h, w)`` at the layer's resolution.
        query: ``(y, x)`` in image pixels; ``grid_query``: ``(row, col)`` at the layer's resolution.
        stride: image pixels per layer position (after the detector's resize), ``(sy, sx)``.
        outside: mass on padded positions beyond the map, per head, for a layer whose windows reach past the
            map (SASA with zero padding); else ``None``.
    """

    weights: Tensor
    grid_weights: Tensor
    query: tuple[int, int]
    grid_query: tuple[int, int]
    stride: tuple[float, float]
    outside: Optional[Tensor] = None


def compute_attention_map(detector: nn.Module, image: Tensor, layer_name: str, pixel: tuple[int, int]) -> AttentionMap:
    """Attention of the layer ``layer_name`` at image pixel ``pixel`` ``(y, x)`` of ``image`` ``[3, H, W]``."""
    captured = capture_layer_inputs(detector, image, [layer_name])
    layer = attention_layers(detector)[layer_name]
    x = captured.inputs[layer_name][:1]
    height, width = image.shape[-2:]
    grid_h, grid_w = layer.attention_map_size(*x.shape[-2:])
    stride = (captured.padded[0] / grid_h, captured.padded[1] / grid_w)
    y, x_pixel = pixel
    if not (0 <= y < height and 0 <= x_pixel < width):
        raise ValueError(f"pixel {pixel} is outside the {height}x{width} image")
    scale = (captured.resized[0] / height, captured.resized[1] / width)
    row = min(int((y + 0.5) * scale[0] / stride[0]), grid_h - 1)
    col = min(int((x_pixel + 0.5) * scale[1] / stride[1]), grid_w - 1)
    grid, outside = layer.attention_weights(x, row, col)
    grid = grid.cpu()
    painted = F.interpolate(grid[None], size=captured.padded, mode="nearest")[0]
    painted = painted[:, : captured.resized[0], : captured.resized[1]]
    painted = F.interpolate(painted[None], size=(height, width), mode="nearest")[0]
    return AttentionMap(painted, grid, (y, x_pixel), (row, col), stride, outside)
