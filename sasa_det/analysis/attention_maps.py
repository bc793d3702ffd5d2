"""Attention weights of one query pixel in a SASA or AA layer of a detector, mapped back to image pixels.

Forward hooks capture the input of each attention layer during an ordinary forward pass; the weights of
the chosen query are then recomputed from that input and the layer's own parameters with a small explicit
computation (the layers' fast paths never materialise the weights and are left untouched):

- ``LocalSelfAttention2d`` (SASA Eq. 3): softmax over the k×k window around the query of
  ``q·k_ab + q_row·rel_row[a-i] + q_col·rel_col[b-j]``; with zero padding (the default) window positions
  outside the map are zero keys that still take part in the softmax: their mass is reported as
  ``outside``, so the weights inside the map sum to ``1 - outside``.
- ``AugmentedConv2d`` (AA Sec. 3): softmax over every position of the (pooled, when the layer pools)
  map of ``q·k + q·(rel_width[x_k-x_q] + rel_height[y_k-y_q])``, q scaled by ``d_kh^-0.5``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sasa_det.layers.augmented_conv import AugmentedConv2d
from sasa_det.layers.local_attention import LocalSelfAttention2d
from sasa_det.layers.relative_position import slice_relative_table

__all__ = [
    "AttentionMap",
    "attention_layers",
    "augmented_attention_weights",
    "capture_layer_inputs",
    "compute_attention_map",
    "local_attention_weights",
]


def attention_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{qualified name: layer}`` of every SASA and AA layer in ``model``, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (LocalSelfAttention2d, AugmentedConv2d))}


@torch.no_grad()
def local_attention_weights(layer: LocalSelfAttention2d, x: Tensor, row: int, col: int) -> tuple[Tensor, Tensor]:
    """SASA attention of query ``(row, col)`` of input ``x`` ``(1, C_in, H, W)``.

    Returns ``(weights, outside)``: ``weights`` ``(heads, H, W)``, zero outside the k×k window;
    ``outside`` ``(heads,)``, the mass on zero-padded window positions beyond the map (0 with ``mask_padding``).
    """
    _, _, height, width = x.shape
    heads, d, size = layer.heads, layer.head_channels, layer.kernel_size
    radius = size // 2
    q = layer.query(x)[0, :, row, col].reshape(heads, d).double()
    if layer.scaled:
        q = q * d**-0.5
    keys = (
        F.pad(layer.key(x), (radius,) * 4)[0, :, row : row + size, col : col + size]
        .reshape(heads, d, size, size)
        .double()
    )
    content = torch.einsum("hd,hdab->hab", q, keys)
    half = d // 2
    rel_rows = q[:, :half] @ layer.rel_row.double().T  # (heads, k): offset a - radius
    rel_cols = q[:, half:] @ layer.rel_col.double().T
    logits = content + rel_rows[:, :, None] + rel_cols[:, None, :]
    rows = torch.arange(size) + row - radius
    cols = torch.arange(size) + col - radius
    inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
    if layer.mask_padding:
        logits = logits.masked_fill(~inside.to(logits.device), float("-inf"))
    window = logits.reshape(heads, -1).softmax(dim=-1).reshape(heads, size, size)
    weights = torch.zeros(heads, height, width, dtype=torch.float64, device=x.device)
    r0, r1 = max(row - radius, 0), min(row + radius + 1, height)
    c0, c1 = max(col - radius, 0), min(col + radius + 1, width)
    weights[:, r0:r1, c0:c1] = window[:, r0 - row + radius : r1 - row + radius, c0 - col + radius : c1 - col + radius]
    outside = 1.0 - weights.sum(dim=(1, 2))
    return weights.float(), outside.clamp_min(0).float()


@torch.no_grad()
def augmented_attention_weights(layer: AugmentedConv2d, x: Tensor, row: int, col: int) -> Tensor:
    """AA attention of query ``(row, col)`` of the attention map (after the layer's pooling, see
    :meth:`AugmentedConv2d.attention_input_size`) for input ``x`` ``(1, C_in, H, W)``: ``(heads, h, w)``."""
    if layer.stride > 1 or layer.pool_attention:
        x = F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False)
    _, _, height, width = x.shape
    heads, dkh = layer.heads, layer.dk // layer.heads
    q, k, _ = torch.split(layer.qkv(x)[0].double(), [layer.dk, layer.dk, layer.dv], dim=0)
    q = q[:, row, col].reshape(heads, dkh) * dkh**-0.5
    logits = torch.einsum("hd,hdyx->hyx", q, k.reshape(heads, dkh, height, width))
    if layer.relative:
        rel_w = slice_relative_table(layer.rel_width, width).double()  # entry x_k - x_q + W - 1
        rel_h = slice_relative_table(layer.rel_height, height).double()
        by_col = q @ rel_w[torch.arange(width) - col + width - 1].T  # (heads, W)
        by_row = q @ rel_h[torch.arange(height) - row + height - 1].T  # (heads, H)
        logits = logits + by_row[:, :, None] + by_col[:, None, :]
    return logits.reshape(heads, -1).softmax(dim=-1).reshape(heads, height, width).float()


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
        outside: SASA only: mass on padded positions beyond the map, per head.
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
    grid_h, grid_w = x.shape[-2:]
    if isinstance(layer, AugmentedConv2d):
        grid_h, grid_w = layer.attention_input_size(grid_h, grid_w)
    stride = (captured.padded[0] / grid_h, captured.padded[1] / grid_w)
    y, x_pixel = pixel
    if not (0 <= y < height and 0 <= x_pixel < width):
        raise ValueError(f"pixel {pixel} is outside the {height}x{width} image")
    scale = (captured.resized[0] / height, captured.resized[1] / width)
    row = min(int((y + 0.5) * scale[0] / stride[0]), grid_h - 1)
    col = min(int((x_pixel + 0.5) * scale[1] / stride[1]), grid_w - 1)
    outside = None
    if isinstance(layer, LocalSelfAttention2d):
        grid, outside = local_attention_weights(layer, x, row, col)
    else:
        grid = augmented_attention_weights(layer, x, row, col)
    grid = grid.cpu()
    painted = F.interpolate(grid[None], size=captured.padded, mode="nearest")[0]
    painted = painted[:, : captured.resized[0], : captured.resized[1]]
    painted = F.interpolate(painted[None], size=(height, width), mode="nearest")[0]
    return AttentionMap(painted, grid, (y, x_pixel), (row, col), stride, outside)
