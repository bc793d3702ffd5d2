"""SASA's windowed attention in plain PyTorch: the ``"unfold"``, ``"shift"`` and ``"halo"`` implementations.

Every implementation has the signature of :data:`.registry.LocalAttentionFn`::

    fn(q, k, v, rel_row, rel_col, kernel_size, mask_padding) -> out

    q, k, v:   (N, heads, d, H, W)   queries (already scaled if the layer scales), keys, values
    rel_row:   (k, d/2)              row-offset embeddings, entry a <-> offset a - k//2
    rel_col:   (k, d/2)              column-offset embeddings
    out:       (N, heads, d, H, W)   y_ij = sum_ab softmax_ab(q_ij·k_ab + q_ij·r_{a-i,b-j}) v_ab

Keys and values outside the image are zeros that still take part in the softmax
(``mask_padding=False``) or are excluded from it (``mask_padding=True``).

* ``"unfold"`` -- gathers the k² neighbours of every pixel with ``F.unfold`` (k² copies of K and V);
  simple, memory hungry.
* ``"shift"`` -- the portable path for CPU and GPU: loops over the k² window offsets, each a shifted view
  of the padded K/V (no copies), accumulating logits and outputs in place; exact softmax over the
  offset axis; hand-written backward that accumulates gradients into the padded K/V the same way.
  Memory: one (N, heads, k², H, W) logit tensor is kept instead of k² copies of K and V.
* ``"halo"`` -- cuts the map into b×b query blocks (:data:`HALO_BLOCK_SIZE`) that attend to their
  (b+k-1)² key/value halo with batched matmuls, out-of-window positions masked; autograd backward.
  It computes (b+k-1)²/k² times the logits of the exact window (4× for b=8, k=7); with the few
  channels per head of SASA the matmuls stay memory bound, so on CPU it is slower than ``"shift"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..relative_position import window_relative_logits

__all__ = ["HALO_BLOCK_SIZE", "local_attention_halo", "local_attention_shifted", "local_attention_unfold"]


def _outside_image_mask(kernel_size: int, height: int, width: int, device: torch.device) -> Tensor:
    """Boolean ``(k, k, H, W)``: True where the key at offset (a, b) of query (i, j) is outside."""
    radius = kernel_size // 2
    offsets = torch.arange(kernel_size, device=device) - radius
    rows = torch.arange(height, device=device)[None, :] + offsets[:, None]  # (k, H)
    cols = torch.arange(width, device=device)[None, :] + offsets[:, None]  # (k, W)
    row_out = (rows < 0) | (rows >= height)
    col_out = (cols < 0) | (cols >= width)
    return row_out[:, None, :, None] | col_out[None, :, None, :]


def local_attention_unfold(
    q: Tensor, k: Tensor, v: Tensor, rel_row: Tensor, rel_col: Tensor, kernel_size: int, mask_padding: bool
) -> Tensor:
    """Windowed attention with ``F.unfold`` (k² copies of K and V); shapes as in the module doc."""
    n, heads, d, height, width = q.shape
    kk = kernel_size * kernel_size
    radius = kernel_size // 2

    def neighbours(t: Tensor) -> Tensor:  # (N, heads, d, H, W) -> (N, heads, d, k*k, H, W)
        cols = F.unfold(t.reshape(n, heads * d, height, width), kernel_size, padding=radius)
        return cols.view(n, heads, d, kk, height, width)

    row, col = window_relative_logits(q, rel_row, rel_col)  # (N, heads, k, H, W) each
    rel = (row.unsqueeze(3) + col.unsqueeze(2)).flatten(2, 3)  # (N, heads, k*k, H, W)
    logits = (q.unsqueeze(3) * neighbours(k)).sum(2) + rel
    if mask_padding:
        outside = _outside_image_mask(kernel_size, height, width, q.device).flatten(0, 1)
        logits = logits.masked_fill(outside, float("-inf"))
    attn = logits.softmax(dim=2)
    return (attn.unsqueeze(2) * neighbours(v)).sum(3)


def _row_windows(padded: Tensor, a: int, height: int, width: int) -> Tensor:
    """View ``(N, heads, d, k, H, W)`` of ``padded[..., a + i, b + j]`` for all column offsets ``b``."""
    band = padded[..., a : a + height, :]  # (N, heads, d, H, W + 2r)
    return band.unfold(4, width, 1).transpose(3, 4)  # (N, heads, d, k, H, W), no copy


class _ShiftedLocalAttention(torch.autograd.Function):
    """Windowed attention by accumulation over shifted views; forward and backward by hand.

    Logits and outputs are accumulated one row offset ``a`` at a time (all ``k`` column offsets of
    that row through one strided view of the padded K/V); gradients of K/V are scattered offset by
    offset into the padded gradient buffers.
    """

    @staticmethod
    def forward(ctx, q, k, v, rel_row, rel_col, kernel_size, mask_padding):  # type: ignore[override]
        n, heads, d, height, width = q.shape
        radius = kernel_size // 2
        pad = (radius, radius, radius, radius)
        k_pad = F.pad(k, pad)  # (N, heads, d, H+2r, W+2r)
        v_pad = F.pad(v, pad)
        row, col = window_relative_logits(q, rel_row, rel_col)  # (N, heads, k, H, W)
        logits = row.unsqueeze(3) + col.unsqueeze(2)  # (N, heads, k_a, k_b, H, W), relative part
        q_wide = q.unsqueeze(3)
        for a in range(kernel_size):
            logits[:, :, a] += (q_wide * _row_windows(k_pad, a, height, width)).sum(2)
        if mask_padding:
            outside = _outside_image_mask(kernel_size, height, width, q.device)
            logits.masked_fill_(outside, float("-inf"))
        attn = logits.view(n, heads, kernel_size * kernel_size, height, width).softmax(dim=2)
        attn = attn.view(n, heads, kernel_size, kernel_size, height, width)
        out = torch.zeros_like(q)
        for a in range(kernel_size):
            out += (attn[:, :, a].unsqueeze(2) * _row_windows(v_pad, a, height, width)).sum(3)
        ctx.save_for_backward(q, k_pad, v_pad, attn, rel_row, rel_col)
        ctx.kernel_size = kernel_size
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k_pad, v_pad, attn, rel_row, rel_col = ctx.saved_tensors
        kernel_size = ctx.kernel_size
        n, heads, d, height, width = q.shape
        radius = kernel_size // 2
        grad_out = grad_out.contiguous()
        grad_wide = grad_out.unsqueeze(3)

        grad_attn = torch.empty_like(attn)  # (N, heads, k_a, k_b, H, W)
        for a in range(kernel_size):
            torch.sum(grad_wide * _row_windows(v_pad, a, height, width), 2, out=grad_attn[:, :, a])
        # softmax backward over the window; excluded offsets have attn == 0 and get 0.
        grad_logits = grad_attn.sub_((attn * grad_attn).sum((2, 3), keepdim=True)).mul_(attn)

        grad_q = torch.zeros_like(q)
        for a in range(kernel_size):
            grad_q += (grad_logits[:, :, a].unsqueeze(2) * _row_windows(k_pad, a, height, width)).sum(3)
        grad_k_pad = torch.zeros_like(k_pad)
        grad_v_pad = torch.zeros_like(v_pad)
        for a in range(kernel_size):
            for b in range(kernel_size):
                window = (..., slice(a, a + height), slice(b, b + width))
                grad_v_pad[window].addcmul_(grad_out, attn[:, :, a, b].unsqueeze(2))
                grad_k_pad[window].addcmul_(q, grad_logits[:, :, a, b].unsqueeze(2))

        grad_row = grad_logits.sum(3)  # (N, heads, k, H, W)
        grad_col = grad_logits.sum(2)
        half = d // 2
        grad_q[:, :, :half] += torch.einsum("nhaij,ac->nhcij", grad_row, rel_row)
        grad_q[:, :, half:] += torch.einsum("nhbij,bc->nhcij", grad_col, rel_col)
        grad_rel_row = torch.einsum("nhaij,nhcij->ac", grad_row, q[:, :, :half])
        grad_rel_col = torch.einsum("nhbij,nhcij->bc", grad_col, q[:, :, half:])
        inner = (..., slice(radius, radius + height), slice(radius, radius + width))
        return grad_q, grad_k_pad[inner], grad_v_pad[inner], grad_rel_row, grad_rel_col, None, None


def local_attention_shifted(
    q: Tensor, k: Tensor, v: Tensor, rel_row: Tensor, rel_col: Tensor, kernel_size: int, mask_padding: bool
) -> Tensor:
    """Windowed attention by accumulation over the k² shifted views (fast path, CPU and GPU).

    All operands are brought to the query's dtype first (under autocast the projections may be
    half precision while the embedding tables stay float32).
    """
    dtype = q.dtype
    return _ShiftedLocalAttention.apply(
        q.contiguous(),
        k.to(dtype).contiguous(),
        v.to(dtype).contiguous(),
        rel_row.to(dtype),
        rel_col.to(dtype),
        kernel_size,
        mask_padding,
    )


#: Side of the square query blocks of the ``"halo"`` implementation (smaller maps use their size).
HALO_BLOCK_SIZE = 8


def _halo_offset_bias(
    block: int, kernel_size: int, blocks: int, size: int, mask_padding: bool, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Additive ``(blocks, block, block + k - 1)`` bias along one axis: 0 or ``-inf``.

    Entry ``[n, i, p]`` is for query ``i`` of block ``n`` and halo position ``p`` (key at
    ``n * block + p - k//2``): ``-inf`` outside the query's window and, with ``mask_padding``, for keys
    outside the map when the query itself is inside (a padded query keeps its whole window, so
    every row of the softmax has its own key as a finite entry).
    """
    radius = kernel_size // 2
    halo = block + kernel_size - 1
    query = torch.arange(block, device=device)[:, None]
    position = torch.arange(halo, device=device)[None, :]
    excluded = ((position - query) < 0) | ((position - query) >= kernel_size)  # (block, halo)
    excluded = excluded.expand(blocks, block, halo)
    if mask_padding:
        start = torch.arange(blocks, device=device)[:, None, None] * block
        key = start + position - radius
        outside = (key < 0) | (key >= size)
        excluded = excluded | (outside & (start + query < size))
    bias = torch.zeros(excluded.shape, device=device, dtype=dtype)
    return bias.masked_fill_(excluded, float("-inf"))


def _halo_relative_table(table: Tensor, block: int) -> Tensor:
    """``(block, d/2, block + k - 1)``: column ``p`` of slice ``i`` is ``table[p - i]`` (0 outside the window)."""
    kernel_size = table.shape[0]
    halo = block + kernel_size - 1
    offset = torch.arange(halo, device=table.device)[None, :] - torch.arange(block, device=table.device)[:, None]
    inside = (offset >= 0) & (offset < kernel_size)
    spread = table[offset.clamp(0, kernel_size - 1)] * inside.unsqueeze(-1).to(table.dtype)  # (block, halo, d/2)
    return spread.transpose(1, 2)


def local_attention_halo(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rel_row: Tensor,
    rel_col: Tensor,
    kernel_size: int,
    mask_padding: bool,
    block_size: int = HALO_BLOCK_SIZE,
) -> Tensor:
    """Windowed attention over blocked queries and their key/value halos (batched matmuls).

    The map is cut into ``b×b`` query blocks (``b = block_size``, or the map's side when smaller;
    the map is zero-padded up to a multiple of ``b``). Each block attends to the
    ``(b+k-1)×(b+k-1)`` halo of the zero-padded keys/values around it with two batched matmuls;
    halo positions outside a query's own k×k window get ``-inf`` (as do keys outside the map with
    ``mask_padding``), so the result is exactly that of the other implementations. It computes
    ``(b+k-1)²`` logits per query instead of ``k²``, but as dense matrix products. Autograd does
    the backward. Shapes as in the module doc; operands are brought to the query's dtype.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    dtype = q.dtype
    k, v, rel_row, rel_col = k.to(dtype), v.to(dtype), rel_row.to(dtype), rel_col.to(dtype)
    n, heads, d, height, width = q.shape
    half = d // 2
    radius = kernel_size // 2
    block_h, block_w = min(block_size, height), min(block_size, width)
    blocks_h, blocks_w = -(-height // block_h), -(-width // block_w)
    extra_h, extra_w = blocks_h * block_h - height, blocks_w * block_w - width
    halo_h, halo_w = block_h + kernel_size - 1, block_w + kernel_size - 1
    batch = n * heads

    # queries: (B, nH, nW, bh, bw, d)
    q_pad = F.pad(q.reshape(batch, d, height, width), (0, extra_w, 0, extra_h))
    q_blocks = q_pad.view(batch, d, blocks_h, block_h, blocks_w, block_w).permute(0, 2, 4, 3, 5, 1)

    def halos(t: Tensor) -> Tensor:  # (N, heads, d, H, W) -> (B, nH, nW, d, halo_h, halo_w), a view
        padded = F.pad(t.reshape(batch, d, height, width), (radius, radius + extra_w, radius, radius + extra_h))
        return padded.unfold(2, halo_h, block_h).unfold(3, halo_w, block_w).permute(0, 2, 3, 1, 4, 5)

    halo_len = halo_h * halo_w
    k_halo = halos(k).reshape(batch, blocks_h, blocks_w, d, halo_len)
    v_halo = halos(v).permute(0, 1, 2, 4, 5, 3).reshape(batch, blocks_h, blocks_w, halo_len, d)

    # relative logits: row part (B, nH, nW, bh, bw, halo_h), column part (..., halo_w), with window bias
    row = torch.matmul(q_blocks[..., :half], _halo_relative_table(rel_row, block_h))
    col = torch.matmul(q_blocks[..., half:].transpose(3, 4), _halo_relative_table(rel_col, block_w)).transpose(3, 4)
    row_bias = _halo_offset_bias(block_h, kernel_size, blocks_h, height, mask_padding, q.device, dtype)
    col_bias = _halo_offset_bias(block_w, kernel_size, blocks_w, width, mask_padding, q.device, dtype)
    row = row + row_bias[:, None, :, None, :]
    col = col + col_bias[None, :, None, :, :]
    queries = block_h * block_w
    relative = (row.unsqueeze(-1) + col.unsqueeze(-2)).view(-1, queries, halo_len)

    logits = torch.baddbmm(relative, q_blocks.reshape(-1, queries, d), k_halo.reshape(-1, d, halo_len))
    out = torch.bmm(logits.softmax(dim=-1), v_halo.reshape(-1, halo_len, d))  # (B·nH·nW, bh·bw, d)
    out = out.view(batch, blocks_h, blocks_w, block_h, block_w, d).permute(0, 5, 1, 3, 2, 4)
    out = out.reshape(n, heads, d, blocks_h * block_h, blocks_w * block_w)
    return out[..., :height, :width]
