"""AA's global attention with 2-D relative logits through FlexAttention (no (HW)² logit or bias tensor).

The relative logit of query ``i`` and key ``j`` is ``q_i·r^W_{x_j-x_i} + q_i·r^H_{y_j-y_i}`` (Bello et al.
2019, Sec. 3.2). For every query it depends on the key only through the key's column and row, so two
per-query tables carry all of it: ``T^W[i, x'] = q_i·r^W_{x'-x_i}`` ``(HW, W)`` and
``T^H[i, y'] = q_i·r^H_{y'-y_i}`` ``(HW, H)``, O(HW·(H+W)) in all, built with the relative-to-absolute
trick. FlexAttention adds ``T^W[i, j mod W] + T^H[i, j div W]`` to each score inside its fused kernel,
so neither an ``(HW, HW)`` bias nor an ``(HW, HW, d)`` embedding tensor is formed.

On CUDA the compiled FlexAttention kernel runs forward and backward. On CPU torch runs FlexAttention's
forward only (eagerly, through its reference implementation), which the tests use to check the tables
and indexing against the dense reference.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .relative_position import relative_logits_1d

__all__ = ["flex_attention_available", "relative_attention_flex"]


def flex_attention_available() -> bool:
    """True when this torch has ``torch.nn.attention.flex_attention`` (torch >= 2.5)."""
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def relative_attention_flex(
    q: Tensor, k: Tensor, v: Tensor, rel_width: Tensor, rel_height: Tensor, height: int, width: int
) -> Tensor:
    """Softmax attention with AA's relative logits added inside FlexAttention.

    Args:
        q: ``(N, heads, HW, d_k)`` queries, already scaled; k: ``(N, heads, HW, d_k)``;
            v: ``(N, heads, HW, d_v)``; positions flattened row-major (``i = y·W + x``).
        rel_width: ``(2W-1, d_k)``, rel_height: ``(2H-1, d_k)``, sized for this map.
        height, width: the map's ``H, W``.

    Returns:
        ``(N, heads, HW, d_v)``.
    """
    from torch.nn.attention.flex_attention import flex_attention

    n, heads, positions, dkh = q.shape
    q_map = q.reshape(n * heads, height, width, dkh)
    rel_width, rel_height = rel_width.to(q.dtype), rel_height.to(q.dtype)
    table_w = relative_logits_1d(q_map, rel_width)  # (B, H, W, W'): [b, y, x, x']
    table_h = relative_logits_1d(q_map.transpose(1, 2), rel_height).transpose(1, 2)  # (B, H, W, H'): [b, y, x, y']
    table_w = table_w.reshape(n, heads, positions, width).contiguous()
    table_h = table_h.reshape(n, heads, positions, height).contiguous()

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + table_w[b, h, q_idx, kv_idx % width] + table_h[b, h, q_idx, kv_idx // width]

    attend = _compiled_flex_attention() if q.is_cuda else flex_attention
    return attend(q, k, v, score_mod=score_mod, scale=1.0)
