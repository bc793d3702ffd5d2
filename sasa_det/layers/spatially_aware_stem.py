"""The spatially-aware attention stem of SASA (Ramachandran et al. 2019, Appendix A.1)."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention_layer import QueryAttention
from .multi_head import head_width

__all__ = ["SDPA_GRID_LIMIT", "SpatiallyAwareStem", "blocked_attention"]

#: Largest batch and heads axes of one ``scaled_dot_product_attention`` call. The fused CUDA kernels put
#: these axes on grid dimensions limited to 65 535; beyond it they fail ("invalid argument") or, on some
#: backends, return wrong values silently (pytorch issue 142228).
SDPA_GRID_LIMIT = 65535


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """Unscaled softmax attention inside each block, ``(B, blocks, P, d) -> (B, blocks, P, d)``.

    ``mask`` ``(blocks, 1, P)`` marks the keys that take part (``None``: all). The work is cut into
    ``scaled_dot_product_attention`` calls whose batch and block axes stay within
    :data:`SDPA_GRID_LIMIT`, so any image size runs (a 1024×1024 image has 65 536 4×4 blocks).
    """
    batch, blocks = q.shape[:2]
    limit = SDPA_GRID_LIMIT
    if batch <= limit and blocks <= limit:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
    rows = []
    for b0 in range(0, batch, limit):
        parts = []
        for s0 in range(0, blocks, limit):
            part = (slice(b0, b0 + limit), slice(s0, s0 + limit))
            part_mask = None if mask is None else mask[s0 : s0 + limit]
            parts.append(F.scaled_dot_product_attention(q[part], k[part], v[part], attn_mask=part_mask, scale=1.0))
        rows.append(torch.cat(parts, dim=1))
    return torch.cat(rows, dim=0)


class SpatiallyAwareStem(nn.Module):
    """Attention stem with position-dependent value mixtures, then BatchNorm and max-pooling.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, ceil(H/pool), ceil(W/pool))``, any ``H, W >= 1``.

    Appendix A.1: values ``v_ab = (sum_m p(a,b,m) W_V^m) x_ab`` with
    ``p(a,b,m) = softmax_m((pos_emb_row[a] + pos_emb_col[b]) · pos_emb_mixture[m])``, where ``(a, b)``
    is the pixel's position inside its ``window × window`` block; ``p`` is shared across heads.
    Queries and keys are plain 1×1 projections. Every pixel attends to the pixels of its own
    non-overlapping ``window × window`` block at full resolution (``heads`` heads, no relative logits
    and no scaling: the appendix equation has neither). Then BatchNorm and a ``pool × pool`` max-pool
    with stride ``pool``. The paper states no ReLU in the stem and none is applied.

    Paper silences and our choices:

    * ``m`` (``mixtures``) is not stated; 4 is used (it fits the paper's FLOP count).
    * The embedding width is not stated; ``pos_emb_row``, ``pos_emb_col`` ``(window, C_out)`` and
      ``pos_emb_mixture`` ``(m, C_out)`` use ``C_out``.
    * ``H`` or ``W`` not a multiple of ``window``: the input is zero-padded at the bottom/right to the
      next multiple, the padded pixels are excluded from the softmax as keys, their outputs are cropped
      away before the BatchNorm, and the max-pool uses ``ceil_mode=True`` (partial windows at the
      bottom/right edge pool over the pixels they contain).

    Parameters: ``query``, ``key`` (1×1 convs ``C_in -> C_out``, no bias), ``value`` (1×1 conv
    ``C_in -> m·C_out``, no bias; output channels ``[m·C_out + c]`` hold ``W_V^m``), the three
    embeddings and ``bn``.

    Args:
        in_channels: image channels.
        out_channels: stem width.
        heads: attention heads.
        mixtures: number ``m`` of value matrices.
        window: attention block size.
        pool: max-pool size and stride.

    The stem is an :class:`~sasa_det.layers.attention_layer.AttentionLayer`.
    """

    #: the kind of attention layer (:class:`~sasa_det.layers.attention_layer.AttentionLayer`)
    attention_kind = "attention stem"

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 64,  # Sec. 3.2/Table 1: the ResNet stem width the stem replaces
        heads: int = 4,  # Appendix A.1: the stem uses 4 heads
        mixtures: int = 4,  # not stated in the paper; conventional choice that fits its FLOPs
        window: int = 4,  # Appendix A.1: 4×4 spatial extent
        pool: int = 4,  # Appendix A.1: 4×4 max-pool with stride 4
    ) -> None:
        super().__init__()
        head_width(in_channels, out_channels, heads)
        for name, value in (("mixtures", mixtures), ("window", window), ("pool", pool)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.mixtures, self.window, self.pool = mixtures, window, pool
        self.query = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.key = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.value = nn.Conv2d(in_channels, mixtures * out_channels, 1, bias=False)
        self.pos_emb_row = nn.Parameter(torch.empty(window, out_channels))
        self.pos_emb_col = nn.Parameter(torch.empty(window, out_channels))
        self.pos_emb_mixture = nn.Parameter(torch.empty(mixtures, out_channels))
        self.bn = nn.BatchNorm2d(out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the layer (the paper gives no initialisation; these are our choices).

        * ``query``/``key``/``value``: normal with std ``1/sqrt(C_in)``.
        * ``pos_emb_row``/``pos_emb_col``: standard normal; ``pos_emb_mixture``: normal with std
          ``1/sqrt(C_out)``, so the mixture logits start with standard deviation about ``sqrt(2)``.
        * ``bn``: weight 1, bias 0.
        """
        std = 1.0 / math.sqrt(self.in_channels)
        for projection in (self.query, self.key, self.value):
            nn.init.normal_(projection.weight, std=std)
        nn.init.normal_(self.pos_emb_row)
        nn.init.normal_(self.pos_emb_col)
        nn.init.normal_(self.pos_emb_mixture, std=self.out_channels**-0.5)
        self.bn.reset_parameters()

    def no_weight_decay(self) -> set[str]:
        """Names of this layer's parameters that take no weight decay: the position embeddings."""
        return {"pos_emb_row", "pos_emb_col", "pos_emb_mixture"}

    def mixture_weights(self) -> Tensor:
        """``p(a, b, m)`` as a ``(m, window, window)`` tensor (softmax over ``m``)."""
        position = self.pos_emb_row[:, None, :] + self.pos_emb_col[None, :, :]  # (w, w, C)
        logits = torch.einsum("abc,mc->mab", position, self.pos_emb_mixture)
        return logits.softmax(dim=0)

    def attention(self, x: Tensor) -> Tensor:
        """Block attention at full resolution: ``(N, C_in, H, W) -> (N, C_out, H, W)`` (before BN)."""
        n, _, height, width = x.shape
        w, heads, m, channels = self.window, self.heads, self.mixtures, self.out_channels
        d = channels // heads
        pad_h, pad_w = (-height) % w, (-width) % w
        x = F.pad(x, (0, pad_w, 0, pad_h))
        blocks_h, blocks_w = (height + pad_h) // w, (width + pad_w) // w

        def to_blocks(t: Tensor, groups: int) -> Tensor:
            # (N, groups*c, Hp, Wp) -> (N, groups, Bh, Bw, w*w, c)
            t = t.reshape(n, groups, -1, blocks_h, w, blocks_w, w)
            return t.permute(0, 1, 3, 5, 4, 6, 2).reshape(n, groups, blocks_h, blocks_w, w * w, -1)

        q = to_blocks(self.query(x), heads)
        k = to_blocks(self.key(x), heads)
        values = self.value(x).reshape(n, m, channels, blocks_h, w, blocks_w, w)
        p = self.mixture_weights().view(1, m, 1, 1, w, 1, w)
        v = to_blocks((values * p).sum(1).reshape(n, channels, blocks_h * w, blocks_w * w), heads)
        mask = None
        if pad_h or pad_w:
            valid = torch.ones(blocks_h * w, blocks_w * w, dtype=torch.bool, device=x.device)
            valid[height:] = False
            valid[:, width:] = False
            valid = valid.view(blocks_h, w, blocks_w, w).permute(0, 2, 1, 3).reshape(blocks_h, blocks_w, 1, w * w)
            mask = valid.view(blocks_h * blocks_w, 1, w * w)
        # fold (N, heads) and (Bh, Bw): (N*heads, Bh*Bw, w*w, d)
        out = blocked_attention(
            q.flatten(0, 1).flatten(1, 2), k.flatten(0, 1).flatten(1, 2), v.flatten(0, 1).flatten(1, 2), mask
        )
        out = out.reshape(n, heads, blocks_h, blocks_w, w, w, d).permute(0, 1, 6, 2, 4, 3, 5)
        out = out.reshape(n, channels, blocks_h * w, blocks_w * w)
        return out[:, :, :height, :width]

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W) -> (N, C_out, ceil(H/pool), ceil(W/pool))``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        out = self.bn(self.attention(x))
        return F.max_pool2d(out, self.pool, self.pool, ceil_mode=True)

    def attention_flops(self, height: int, width: int) -> int:
        """FLOPs (multiply-add = 2) of the stem's attention for one ``height × width`` input.

        On the padded map of ``L`` pixels (``H, W`` rounded up to multiples of ``window``): value
        mixing ``2·L·m·C_out``, logits ``q·k`` ``2·L·window²·C_out``, weighted sum ``2·L·window²·C_out``,
        and the mixture logits ``2·window²·m·C_out``. The 1×1 projections are convolutions and counted
        elsewhere.
        """
        w = self.window
        positions = (-(-height // w) * w) * (-(-width // w) * w)
        channels = self.out_channels
        flops = 2 * positions * self.mixtures * channels
        flops += 2 * 2 * positions * w * w * channels
        flops += 2 * w * w * self.mixtures * channels
        return flops

    def attention_map_size(self, height: int, width: int) -> tuple[int, int]:
        """The attention runs at the input's resolution (before the max-pool): ``(height, width)``."""
        return height, width

    @torch.no_grad()
    def attention_weights(self, x: Tensor, row: int, col: int) -> QueryAttention:
        """The attention of pixel ``(row, col)`` of input ``x`` ``(1, C_in, H, W)``: ``weights``
        ``(heads, H, W)``, the unscaled softmax of ``q·k`` over the pixels of the query's own
        ``window × window`` block that lie inside the image (zero elsewhere), in float64; ``outside`` ``None``
        (padded pixels take no part)."""
        _, _, height, width = x.shape
        heads, w = self.heads, self.window
        d = self.out_channels // heads
        r0, c0 = row - row % w, col - col % w
        r1, c1 = min(r0 + w, height), min(c0 + w, width)
        q = self.query(x)[0, :, row, col].reshape(heads, d).double()
        keys = self.key(x)[0, :, r0:r1, c0:c1].reshape(heads, d, r1 - r0, c1 - c0).double()
        logits = torch.einsum("hd,hdab->hab", q, keys)
        block = logits.reshape(heads, -1).softmax(dim=-1).reshape(logits.shape)
        weights = torch.zeros(heads, height, width, dtype=torch.float64, device=x.device)
        weights[:, r0:r1, c0:c1] = block
        return QueryAttention(weights.float(), None)

    def portable_path(self) -> AbstractContextManager[str]:
        """The stem has one path, blocked ``scaled_dot_product_attention`` in plain PyTorch: nothing to switch."""
        return nullcontext("plain PyTorch, its only path")

    def resize_position_table(self, name: str, table: Tensor) -> None:
        """None: the position embeddings are sized by the block (``window``), not by the map."""
        return None

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, heads={self.heads}, mixtures={self.mixtures}, "
            f"window={self.window}, pool={self.pool}"
        )
