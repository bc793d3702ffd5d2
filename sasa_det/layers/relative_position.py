"""Relative-position helpers shared by the attention layers.

Two families of relative embeddings appear in the papers:

* SASA (Ramachandran et al. 2019, Sec. 2.2): a k×k window around each query; the row offset
  ``a - i`` and the column offset ``b - j`` each index a table with ``k`` entries.
  :func:`window_relative_logits` turns a query map and the two tables into per-offset logits.
* AA (Bello et al. 2019, Sec. 3.2): global attention over an H×W map; offsets range over
  ``-(W-1) .. W-1`` and ``-(H-1) .. H-1``, tables of ``2W-1`` and ``2H-1`` entries.
  :func:`relative_logits_2d` computes ``q_i · (r^W_{x_j - x_i} + r^H_{y_j - y_i})`` for every
  query/key pair in O(HW·d) extra memory with the relative-to-absolute indexing trick
  (:func:`rel_to_abs`): the (HW, HW, d) tensor of embeddings is never formed.

Tables built for a maximum map size are reused for smaller maps by slicing around offset 0
(:func:`slice_relative_table`, exact). For maps larger than the maximum the table is resampled
linearly to the needed length (offset 0 stays at the centre, the outermost learned entries map to
the outermost needed offsets); this is an approximation, documented where it is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .resize import linear_resize

__all__ = [
    "rel_to_abs",
    "relative_logits_1d",
    "relative_logits_2d",
    "slice_relative_table",
    "window_relative_logits",
]


def rel_to_abs(x: Tensor) -> Tensor:
    """Convert logits indexed by relative offset into logits indexed by absolute key position.

    Args:
        x: ``(..., L, 2L-1)``; ``x[..., i, m]`` is the logit of query ``i`` for offset
            ``m - (L - 1)`` (offset = key - query).

    Returns:
        ``(..., L, L)`` with ``out[..., i, j] = x[..., i, j - i + L - 1]``.

    The trick (pad one column, flatten, pad ``L-1`` entries, reshape to rows of ``2L-1``, slice)
    uses only O(L²) memory per leading index and no gather.
    """
    *lead, length, width = x.shape
    if width != 2 * length - 1:
        raise ValueError(f"rel_to_abs expects a last dimension of 2L-1={2 * length - 1}, got {width}")
    x = F.pad(x, (0, 1))  # (..., L, 2L)
    x = x.reshape(*lead, length * 2 * length)
    x = F.pad(x, (0, length - 1))  # (..., 2L*L + L - 1) = (L + 1) rows of 2L - 1
    x = x.reshape(*lead, length + 1, 2 * length - 1)
    return x[..., :length, length - 1 :]


def relative_logits_1d(q: Tensor, table: Tensor) -> Tensor:
    """Relative logits along the last spatial axis.

    Args:
        q: ``(B, R, L, d)`` queries; ``R`` independent rows of length ``L``.
        table: ``(2L-1, d)``; entry ``m`` embeds offset ``m - (L - 1)``.

    Returns:
        ``(B, R, L, L)`` with ``out[b, r, i, j] = q[b, r, i] · table[j - i + L - 1]``.
    """
    return rel_to_abs(torch.matmul(q, table.transpose(0, 1)))


def relative_logits_2d(q: Tensor, rel_width: Tensor, rel_height: Tensor) -> Tensor:
    """2-D relative logits of AA (Bello et al. 2019, Eq. 3 and Sec. 3.2).

    Args:
        q: ``(B, H, W, d)`` queries of one head (``B`` folds batch and heads).
        rel_width: ``(2W-1, d)`` column-offset embeddings (offset ``x_key - x_query``).
        rel_height: ``(2H-1, d)`` row-offset embeddings (offset ``y_key - y_query``).

    Returns:
        ``(B, H*W, H*W)`` logits ``q_i · (rel_width[x_j - x_i] + rel_height[y_j - y_i])`` with
        query and key indices flattened row-major (``i = y * W + x``).
    """
    batch, height, width, _ = q.shape
    logits_w = relative_logits_1d(q, rel_width)  # (B, H, W, W): [b, y, x, x']
    logits_h = relative_logits_1d(q.transpose(1, 2), rel_height)  # (B, W, H, H): [b, x, y, y']
    logits_h = logits_h.transpose(1, 2)  # (B, H, W, H): [b, y, x, y']
    logits = logits_w.unsqueeze(3) + logits_h.unsqueeze(4)  # (B, H, W, H', W')
    return logits.reshape(batch, height * width, height * width)


def slice_relative_table(table: Tensor, length: int) -> Tensor:
    """Table of ``2*length - 1`` offsets taken from a table built for a maximum length.

    Args:
        table: ``(2M-1, d)``; entry ``m`` embeds offset ``m - (M - 1)``.
        length: the map's extent ``L`` along this axis (``>= 1``).

    Returns:
        ``(2L-1, d)``. For ``L <= M`` the exact centre slice (offsets ``-(L-1) .. L-1``). For
        ``L > M`` the table resampled with linear interpolation (``align_corners=True``: offset 0
        stays the centre entry, the learned extremes become offsets ``±(L-1)``); an approximation
        that keeps the layer usable on maps larger than it was built for.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    max_length = (table.shape[0] + 1) // 2
    if length <= max_length:
        return table[max_length - length : max_length + length - 1]
    return linear_resize(table, 2 * length - 1)


def window_relative_logits(q: Tensor, rel_row: Tensor, rel_col: Tensor) -> tuple[Tensor, Tensor]:
    """Per-offset relative logits of SASA's k×k window (Ramachandran et al. 2019, Sec. 2.2).

    The first half of each head's channels meets the row-offset embedding, the second half the
    column-offset embedding, so ``q · r_{a-i, b-j} = row[a] + col[b]`` with the two outputs below.

    Args:
        q: ``(N, heads, d, H, W)`` queries.
        rel_row: ``(k, d/2)``; entry ``a`` embeds row offset ``a - k//2``.
        rel_col: ``(k, d/2)``; entry ``b`` embeds column offset ``b - k//2``.

    Returns:
        ``row, col``: each ``(N, heads, k, H, W)``.
    """
    half = q.shape[2] // 2
    row = torch.einsum("nhcij,ac->nhaij", q[:, :, :half], rel_row)
    col = torch.einsum("nhcij,bc->nhbij", q[:, :, half:], rel_col)
    return row, col
