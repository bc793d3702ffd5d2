"""Slow, obviously-correct references for the attention layers (used by the tests).

Each reference spells the paper's equation out with explicit loops or explicit full-size tensors
(dense attention matrices, the full (queries, keys, d) tensor of relative embeddings) and shares no
code with the fast paths beyond the modules' own parameters. Only for tiny inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .augmented_conv import AugmentedConv2d
    from .spatially_aware_stem import SpatiallyAwareStem

__all__ = [
    "augmented_attention_reference",
    "augmented_conv_reference",
    "local_attention_reference",
    "relative_embeddings_2d_reference",
    "spatially_aware_stem_reference",
]


def local_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, rel_row: Tensor, rel_col: Tensor, kernel_size: int, mask_padding: bool
) -> Tensor:
    """SASA Eq. 3 as dense attention over the zero-padded map with an explicit window mask.

    Args:
        q, k, v: ``(N, heads, d, H, W)``.
        rel_row, rel_col: ``(k, d/2)``; entry ``a`` embeds offset ``a - k//2``.
        kernel_size: odd window size ``k``.
        mask_padding: exclude keys outside the image from the softmax instead of treating them as
            zero keys/values that take part in it.

    Returns:
        ``(N, heads, d, H, W)``.

    Every query (i, j) is compared with every key of the padded ``(H+2r) x (W+2r)`` grid; a full
    ``(HW, (H+2r)(W+2r), d)`` tensor holds ``[rel_row[a-i], rel_col[b-j]]`` for keys inside the window,
    and keys outside the window get ``-inf``.
    """
    n, heads, d, height, width = q.shape
    radius = kernel_size // 2
    padded_h, padded_w = height + 2 * radius, width + 2 * radius
    num_queries, num_keys = height * width, padded_h * padded_w

    row_index = torch.zeros(num_queries, num_keys, dtype=torch.long)
    col_index = torch.zeros(num_queries, num_keys, dtype=torch.long)
    allowed = torch.zeros(num_queries, num_keys, dtype=torch.bool)
    for i in range(height):
        for j in range(width):
            query = i * width + j
            for a in range(padded_h):  # key row in padded coordinates; image row a - radius
                for b in range(padded_w):
                    row_offset = (a - radius) - i
                    col_offset = (b - radius) - j
                    if abs(row_offset) > radius or abs(col_offset) > radius:
                        continue
                    inside = 0 <= a - radius < height and 0 <= b - radius < width
                    if mask_padding and not inside:
                        continue
                    key = a * padded_w + b
                    allowed[query, key] = True
                    row_index[query, key] = row_offset + radius
                    col_index[query, key] = col_offset + radius
    allowed = allowed.to(q.device)
    embeddings = torch.cat([rel_row[row_index.to(q.device)], rel_col[col_index.to(q.device)]], dim=-1)

    pad = (radius, radius, radius, radius)
    q_flat = q.reshape(n, heads, d, num_queries)
    k_flat = F.pad(k, pad).reshape(n, heads, d, num_keys)
    v_flat = F.pad(v, pad).reshape(n, heads, d, num_keys)
    logits = torch.einsum("nhdq,nhdk->nhqk", q_flat, k_flat)
    logits = logits + torch.einsum("nhdq,qkd->nhqk", q_flat, embeddings)
    logits = logits.masked_fill(~allowed, float("-inf"))
    attn = logits.softmax(dim=-1)
    out = torch.einsum("nhqk,nhdk->nhdq", attn, v_flat)
    return out.reshape(n, heads, d, height, width)


def relative_embeddings_2d_reference(rel_width: Tensor, rel_height: Tensor, height: int, width: int) -> Tensor:
    """Full ``(HW, HW, d)`` tensor ``E[i, j] = rel_width[x_j - x_i + W - 1] + rel_height[y_j - y_i + H - 1]``.

    Args:
        rel_width: ``(2W-1, d)``; rel_height: ``(2H-1, d)`` (already sized for this map).
    """
    num = height * width
    width_index = torch.zeros(num, num, dtype=torch.long)
    height_index = torch.zeros(num, num, dtype=torch.long)
    for yi in range(height):
        for xi in range(width):
            for yj in range(height):
                for xj in range(width):
                    width_index[yi * width + xi, yj * width + xj] = xj - xi + width - 1
                    height_index[yi * width + xi, yj * width + xj] = yj - yi + height - 1
    device = rel_width.device
    return rel_width[width_index.to(device)] + rel_height[height_index.to(device)]


def augmented_attention_reference(module: AugmentedConv2d, x: Tensor) -> Tensor:
    """The attention branch of :class:`AugmentedConv2d` (after ``W^O``, before any upsampling).

    Args:
        module: the layer whose parameters are used.
        x: ``(N, C_in, H, W)`` the input the attention branch sees (already pooled if the layer pools).

    Returns:
        ``(N, d_v, H, W)``.

    Logits ``q_i·k_j + q_i·(r^W_{x_j-x_i} + r^H_{y_j-y_i})`` with the full relative-embedding tensor.
    """
    n, _, height, width = x.shape
    heads, dk, dv = module.heads, module.dk, module.dv
    dkh, dvh = dk // heads, dv // heads
    qkv = F.conv2d(x, module.qkv.weight, module.qkv.bias)
    q, k, v = torch.split(qkv, [dk, dk, dv], dim=1)
    q = q * dkh**-0.5
    q = q.reshape(n, heads, dkh, height * width)
    k = k.reshape(n, heads, dkh, height * width)
    v = v.reshape(n, heads, dvh, height * width)
    logits = torch.einsum("nhdi,nhdj->nhij", q, k)
    if module.relative:
        max_h, max_w = module.max_size
        if height > max_h or width > max_w:
            raise ValueError("the reference covers maps within max_size only")
        rel_w = module.rel_width[max_w - width : max_w + width - 1]
        rel_h = module.rel_height[max_h - height : max_h + height - 1]
        embeddings = relative_embeddings_2d_reference(rel_w, rel_h, height, width)
        logits = logits + torch.einsum("nhdi,ijd->nhij", q, embeddings)
    attn = logits.softmax(dim=-1)
    out = torch.einsum("nhij,nhdj->nhdi", attn, v)  # (N, heads, dvh, HW): channel = head * dvh + c
    out = out.reshape(n, dv, height, width)
    return F.conv2d(out, module.attention_output.weight, module.attention_output.bias)


def augmented_conv_reference(module: AugmentedConv2d, x: Tensor) -> Tensor:
    """:class:`AugmentedConv2d` forward with :func:`augmented_attention_reference`; ``(N, F_out, H', W')``."""
    conv_out = module.conv(x)
    attention_input = x
    if module.stride > 1 or module.pool_attention:
        attention_input = F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False)
    attention = augmented_attention_reference(module, attention_input)
    if attention.shape[-2:] != conv_out.shape[-2:]:
        attention = F.interpolate(attention, size=conv_out.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([conv_out, attention], dim=1)


def spatially_aware_stem_reference(module: SpatiallyAwareStem, x: Tensor) -> Tensor:
    """:class:`SpatiallyAwareStem` forward with explicit loops over blocks and window positions.

    Args:
        x: ``(N, C_in, H, W)``. Returns ``(N, C_out, ceil(H/pool), ceil(W/pool))``.
    """
    n, _, height, width = x.shape
    window, heads, mixtures = module.window, module.heads, module.mixtures
    channels = module.out_channels
    d = channels // heads
    value_weights = module.value.weight.reshape(mixtures, channels, -1)  # (m, C_out, C_in)
    query_weight = module.query.weight.reshape(channels, -1)
    key_weight = module.key.weight.reshape(channels, -1)
    out = torch.zeros(n, channels, height, width, dtype=x.dtype, device=x.device)
    for top in range(0, height, window):
        for left in range(0, width, window):
            positions = [(a, b) for a in range(window) for b in range(window) if top + a < height and left + b < width]
            pixels = torch.stack([x[:, :, top + a, left + b] for a, b in positions], dim=1)  # (N, P, C_in)
            values = []
            for index, (a, b) in enumerate(positions):
                mixture_logits = torch.stack(
                    [
                        torch.dot(module.pos_emb_row[a] + module.pos_emb_col[b], module.pos_emb_mixture[m])
                        for m in range(mixtures)
                    ]
                )
                p = mixture_logits.softmax(dim=0)
                mixed_weight = sum(p[m] * value_weights[m] for m in range(mixtures))  # (C_out, C_in)
                values.append(pixels[:, index] @ mixed_weight.T)
            values = torch.stack(values, dim=1)  # (N, P, C_out)
            queries = pixels @ query_weight.T
            keys = pixels @ key_weight.T
            for h in range(heads):
                part = slice(h * d, (h + 1) * d)
                logits = queries[:, :, part] @ keys[:, :, part].transpose(1, 2)  # (N, P, P)
                result = logits.softmax(dim=-1) @ values[:, :, part]
                for index, (a, b) in enumerate(positions):
                    out[:, part, top + a, left + b] = result[:, index]
    out = module.bn(out)
    return F.max_pool2d(out, module.pool, module.pool, ceil_mode=True)
