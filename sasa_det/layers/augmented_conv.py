"""Attention-augmented convolution (Bello et al. 2019, "AA")."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention_layer import QueryAttention, attribute_set_to
from .relative_flex_attention import (
    flex_attention_available,
    flex_attention_usable,
    nondeterministic_backward,
    relative_attention_flex,
)
from .relative_position import relative_logits_2d, slice_relative_table
from .resize import bilinear_resize

logger = logging.getLogger(__name__)

__all__ = ["AUGMENTED_ATTENTION_IMPLS", "AugmentedConv2d"]

#: How the relative-logit attention runs: ``"auto"`` (FlexAttention on CUDA, else SDPA), ``"flex"``, ``"sdpa"``.
AUGMENTED_ATTENTION_IMPLS = ("auto", "flex", "sdpa")


def _channels_from_ratio(ratio: float, out_channels: int, heads: int) -> int:
    """``ratio * out_channels`` rounded to the nearest positive multiple of ``heads``."""
    return heads * max(1, round(ratio * out_channels / heads))


class AugmentedConv2d(nn.Module):
    """``AAConv(X) = Concat[Conv(X), MHA(X)]`` (Bello et al. 2019, Eq. 5), conv channels first.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, ceil(H/stride), ceil(W/stride))``, any ``H, W >= 1``.

    * ``conv``: ``k×k`` convolution (padding ``k//2``, given stride, no bias) with ``C_out - d_v``
      outputs.
    * ``qkv``: one 1×1 convolution with ``2·d_k + d_v`` outputs (queries, keys, values, in that order),
      split into ``heads`` heads; queries are scaled by ``d_kh^-0.5`` before both content and relative
      logits (Sec. 3.1). Attention is global over the map; ``attention_output`` is the 1×1 ``W^O``
      (``d_v -> d_v``) that merges the heads (channel order: head-major).
    * Relative logits (Sec. 3.2): ``q_i·(r^W_{x_j-x_i} + r^H_{y_j-y_i})`` with tables ``rel_width``
      ``(2·W_max-1, d_kh)`` and ``rel_height`` ``(2·H_max-1, d_kh)`` shared across heads, computed with
      the relative-to-absolute trick (O(HW·d_kh) extra memory; never an (HW, HW, d_kh) tensor). For
      maps up to ``max_size`` the tables are sliced around offset 0 (exact); for larger maps they are
      resampled with linear interpolation (an approximation; see
      :func:`sasa_det.layers.relative_position.slice_relative_table`).
    * ``stride > 1``: the conv is strided and the attention runs on the 3×3/stride-2 average-pooled
      input (padding 1, padding excluded from the average), so both parts have the output's size.
    * ``pool_attention=True`` (for large detection maps, where global attention's O((HW)²) memory is
      prohibitive): the attention runs on the 3×3/stride-2 average-pooled input and is bilinearly
      upsampled (``align_corners=False``) to the conv output's size before the concatenation (by matrix
      products when deterministic algorithms are on: :mod:`.resize`). With
      ``stride=2`` this is the same as the strided layer.
    * Channel counts: ``d_k = dk_ratio·C_out`` and ``d_v = dv_ratio·C_out`` rounded to the nearest
      positive multiple of ``heads`` (the paper's ratios give fractions for ResNet widths, e.g.
      0.2·128 = 25.6, and do not say how they were rounded). Exact counts can be given with ``dk`` and
      ``dv``; they must be divisible by ``heads``.

    Args:
        in_channels, out_channels: ``C_in``, ``C_out``.
        kernel_size: the convolution's (odd) size.
        stride: 1 or 2.
        dk_ratio: ``κ = d_k / C_out``.
        dv_ratio: ``υ = d_v / C_out``.
        heads: ``N_h``.
        relative: add the 2-D relative logits.
        max_size: ``(H_max, W_max)`` of the attention map the tables are built for.
        pool_attention: attention on the 3×3/2 average-pooled map, upsampled back.
        dk, dv: explicit ``d_k``/``d_v`` overriding the ratios.
        attention_impl: with relative logits, ``"sdpa"`` adds them as a dense ``(N, heads, HW, HW)``
            mask to ``scaled_dot_product_attention``; ``"flex"`` adds them inside FlexAttention from
            per-query tables of O(HW·(H+W)), head widths zero-padded to 16 (:mod:`.relative_flex_attention`;
            on CPU torch supports its forward only); ``"auto"`` uses FlexAttention for CUDA inputs when
            torch has it and a first forward+backward of that input class works (otherwise SDPA, with a
            warning naming the reason; also in deterministic runs, as FlexAttention's table gradients use
            atomic adds), and SDPA elsewhere. ``attention_path`` tells which ran last.

    The layer is an :class:`~sasa_det.layers.attention_layer.AttentionLayer`.
    """

    #: the kind of attention layer (:class:`~sasa_det.layers.attention_layer.AttentionLayer`)
    attention_kind = "aa"
    #: the attention used while exporting: ``scaled_dot_product_attention`` with the relative logits as a
    #: dense additive mask (FlexAttention is a compiled kernel the exporters cannot record)
    portable_impl = "sdpa"
    #: the parameters sized by the attention map (``image_size``), which :meth:`resize_position_table` converts
    _position_tables = ("rel_width", "rel_height")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dk_ratio: float = 0.2,  # Sec. 4.1: κ = 0.2
        dv_ratio: float = 0.1,  # Sec. 4.1: υ = 0.1
        heads: int = 8,  # Sec. 4.1: N_h = 8
        relative: bool = True,  # Sec. 3.2: 2-D relative position embeddings
        max_size: tuple[int, int] = (64, 64),
        pool_attention: bool = False,
        *,
        dk: int | None = None,
        dv: int | None = None,
        attention_impl: str = "auto",
    ) -> None:
        super().__init__()
        if attention_impl not in AUGMENTED_ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {AUGMENTED_ATTENTION_IMPLS}, got {attention_impl!r}")
        if attention_impl == "flex" and not flex_attention_available():
            raise ValueError("attention_impl='flex' needs torch.nn.attention.flex_attention (torch >= 2.5)")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if dk is None:
            if dk_ratio <= 0:
                raise ValueError(f"dk_ratio must be > 0, got {dk_ratio}")
            dk = _channels_from_ratio(dk_ratio, out_channels, heads)
        if dv is None:
            if dv_ratio <= 0:
                raise ValueError(f"dv_ratio must be > 0, got {dv_ratio}")
            dv = _channels_from_ratio(dv_ratio, out_channels, heads)
        if dk < 1 or dk % heads != 0:
            raise ValueError(f"dk={dk} must be a positive multiple of heads={heads}")
        if dv < 1 or dv % heads != 0:
            raise ValueError(f"dv={dv} must be a positive multiple of heads={heads}")
        if dv >= out_channels:
            raise ValueError(
                f"dv={dv} leaves no channels for the convolution (out_channels={out_channels}); lower dv_ratio"
            )
        max_h, max_w = (int(s) for s in max_size)
        if max_h < 1 or max_w < 1:
            raise ValueError(f"max_size must be positive, got {max_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.heads = heads
        self.dk = dk
        self.dv = dv
        self.relative = relative
        self.max_size = (max_h, max_w)
        self.pool_attention = pool_attention
        self.attention_impl = attention_impl
        self._flex_failed = False  # set when "auto" met an error in FlexAttention; SDPA from then on
        #: which attention ran in the last forward: "flex", "sdpa" (dense relative mask) or "sdpa_no_rel"
        self.attention_path: str | None = None
        self.conv = nn.Conv2d(
            in_channels, out_channels - dv, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.qkv = nn.Conv2d(in_channels, 2 * dk + dv, 1, bias=False)
        self.attention_output = nn.Conv2d(dv, dv, 1, bias=False)
        if relative:
            self.rel_width = nn.Parameter(torch.empty(2 * max_w - 1, dk // heads))
            self.rel_height = nn.Parameter(torch.empty(2 * max_h - 1, dk // heads))
        else:
            self.register_parameter("rel_width", None)
            self.register_parameter("rel_height", None)
        self.reset_parameters()

    def no_weight_decay(self) -> set[str]:
        """Names of this layer's parameters that take no weight decay: the relative position tables."""
        return {"rel_width", "rel_height"} if self.rel_width is not None else set()

    def reset_parameters(self) -> None:
        """Initialise the layer.

        * ``conv``, ``qkv``, ``attention_output``: Kaiming normal (fan-out, ReLU), as torchvision's
          ResNet initialises its convolutions (the paper does not say).
        * ``rel_width``/``rel_height``: normal with std ``d_kh^-0.5`` (the paper's appendix code passes
          this value as the mean by mistake; std is what is meant).
        """
        for conv in (self.conv, self.qkv, self.attention_output):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if self.relative:
            std = (self.dk // self.heads) ** -0.5
            nn.init.normal_(self.rel_width, std=std)
            nn.init.normal_(self.rel_height, std=std)

    def attention_input_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of the map the attention runs on for an ``height × width`` input."""
        if self.stride > 1 or self.pool_attention:
            return (height + 1) // 2, (width + 1) // 2
        return height, width

    def attention_map_size(self, height: int, width: int) -> tuple[int, int]:
        """The map the attention runs on: :meth:`attention_input_size`."""
        return self.attention_input_size(height, width)

    @torch.no_grad()
    def attention_weights(self, x: Tensor, row: int, col: int) -> QueryAttention:
        """The attention of query ``(row, col)`` of the attention map (pooled when the layer pools) for input
        ``x`` ``(1, C_in, H, W)``: ``weights`` ``(heads, h, w)``, ``outside`` ``None``.

        Sec. 3: softmax over every position of the map of ``q·k + q·(rel_width[x_k-x_q] +
        rel_height[y_k-y_q])``, ``q`` scaled by ``d_kh^-0.5``, computed explicitly in float64.
        """
        if self.stride > 1 or self.pool_attention:
            x = F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False)
        _, _, height, width = x.shape
        heads, dkh = self.heads, self.dk // self.heads
        q, k, _ = torch.split(self.qkv(x)[0].double(), [self.dk, self.dk, self.dv], dim=0)
        q = q[:, row, col].reshape(heads, dkh) * dkh**-0.5
        logits = torch.einsum("hd,hdyx->hyx", q, k.reshape(heads, dkh, height, width))
        if self.relative:
            rel_w = slice_relative_table(self.rel_width, width).double()  # entry x_k - x_q + W - 1
            rel_h = slice_relative_table(self.rel_height, height).double()
            by_col = q @ rel_w[torch.arange(width) - col + width - 1].T  # (heads, W)
            by_row = q @ rel_h[torch.arange(height) - row + height - 1].T  # (heads, H)
            logits = logits + by_row[:, :, None] + by_col[:, None, :]
        weights = logits.reshape(heads, -1).softmax(dim=-1).reshape(heads, height, width)
        return QueryAttention(weights.float(), None)

    def portable_path(self) -> AbstractContextManager[str]:
        """Inside the block the attention runs :attr:`portable_impl` (plain PyTorch operators)."""
        return attribute_set_to(self, "attention_impl", self.portable_impl)

    def resize_position_table(self, name: str, table: Tensor) -> Tensor | None:
        """``rel_width`` ``(2W'-1, d_kh)`` / ``rel_height`` of a layer built for another map size, converted to
        this layer's length as :meth:`forward` treats other map sizes
        (:func:`~sasa_det.layers.relative_position.slice_relative_table`): the exact centre slice when this
        layer's table is shorter, linear resampling (``align_corners=True``; an approximation for offsets the
        source never learned) when it is longer. ``None`` for another parameter, a layer without relative
        logits, or a table of another depth or of even length."""
        own = getattr(self, name, None) if name in self._position_tables else None
        if own is None or table.dim() != 2 or table.shape[1] != own.shape[1] or table.shape[0] % 2 == 0:
            return None
        return slice_relative_table(table, (own.shape[0] + 1) // 2)

    def relative_logits(self, q: Tensor) -> Tensor:
        """Relative logits for scaled queries ``q`` ``(N, heads, H, W, d_kh)`` -> ``(N, heads, HW, HW)``."""
        n, heads, height, width, dkh = q.shape
        rel_w = slice_relative_table(self.rel_width, width)
        rel_h = slice_relative_table(self.rel_height, height)
        logits = relative_logits_2d(q.reshape(n * heads, height, width, dkh), rel_w, rel_h)
        return logits.view(n, heads, height * width, height * width)

    def attention(self, x: Tensor) -> Tensor:
        """Multi-head attention branch: ``(N, C_in, H, W) -> (N, d_v, H, W)`` (no pooling here)."""
        n, _, height, width = x.shape
        heads = self.heads
        dkh, dvh = self.dk // heads, self.dv // heads
        q, k, v = torch.split(self.qkv(x), [self.dk, self.dk, self.dv], dim=1)
        q = q * dkh**-0.5  # out of place: q is a view of the qkv output
        q = q.reshape(n, heads, dkh, height * width).transpose(2, 3)  # (N, heads, HW, d_kh)
        k = k.reshape(n, heads, dkh, height * width).transpose(2, 3)
        v = v.reshape(n, heads, dvh, height * width).transpose(2, 3)  # (N, heads, HW, d_vh)
        out = self._relative_attention_flex(q, k, v, height, width) if self._uses_flex(q, v) else None
        self.attention_path = "flex" if out is not None else ("sdpa" if self.relative else "sdpa_no_rel")
        if out is None:
            mask = None
            if self.relative:
                mask = self.relative_logits(q.reshape(n, heads, height, width, dkh))
            out = self._dense_attention(q, k, v, mask)  # (N, heads, HW, d_vh)
        out = out.transpose(2, 3).reshape(n, self.dv, height, width)  # heads back to channels
        return self.attention_output(out)

    def _dense_attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """SDPA over the whole map; ``mask`` the ``(N, heads, HW, HW)`` relative logits, or ``None``."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)

    def _uses_flex(self, q: Tensor, v: Tensor) -> bool:
        if not self.relative or self.attention_impl == "sdpa":
            return False
        if self.attention_impl == "flex":
            conflict = nondeterministic_backward(q)
            if conflict is not None:
                raise RuntimeError(
                    f"AugmentedConv2d(attention_impl='flex'): {conflict}; use attention_impl='auto' "
                    "(SDPA in deterministic runs) or 'sdpa'"
                )
            return True
        return q.is_cuda and not self._flex_failed and flex_attention_available() and flex_attention_usable(q, v)

    def _relative_attention_flex(self, q: Tensor, k: Tensor, v: Tensor, height: int, width: int) -> Tensor | None:
        """FlexAttention path; under ``"auto"`` an error switches the layer to SDPA (``None`` returned)."""
        rel_w = slice_relative_table(self.rel_width, width)
        rel_h = slice_relative_table(self.rel_height, height)
        if self.attention_impl == "flex":
            return relative_attention_flex(q, k, v, rel_w, rel_h, height, width)
        try:
            return relative_attention_flex(q, k, v, rel_w, rel_h, height, width)
        except Exception as error:  # e.g. a head width the compiled kernel does not take
            logger.warning(
                "AugmentedConv2d: FlexAttention failed (%s: %s); using SDPA with a dense mask.",
                type(error).__name__,
                error,
            )
            self._flex_failed = True
            return None

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W) -> (N, C_out, ceil(H/stride), ceil(W/stride))``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        conv_out = self.conv(x)
        attention_input = x
        if self.stride > 1 or self.pool_attention:
            attention_input = F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False)
        attention = self.attention(attention_input)
        if attention.shape[-2:] != conv_out.shape[-2:]:
            attention = bilinear_resize(attention, tuple(conv_out.shape[-2:]))
        return torch.cat([conv_out, attention], dim=1)

    def attention_flops(self, height: int, width: int) -> int:
        """FLOPs (multiply-add = 2) of the attention for one ``height × width`` input.

        On the attention map of ``L = h·w`` positions (pooled when the layer pools): content logits
        ``2·L²·d_k``, relative logits as computed (every query against ``2w-1`` width and ``2h-1``
        height embeddings: ``2·L·(2w-1 + 2h-1)·d_k``) and the weighted sum ``2·L²·d_v``. The 1×1/k×k
        convolutions are counted elsewhere.
        """
        h, w = self.attention_input_size(height, width)
        positions = h * w
        flops = 2 * positions * positions * (self.dk + self.dv)
        if self.relative:
            flops += 2 * positions * ((2 * w - 1) + (2 * h - 1)) * self.dk
        return flops

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"dk={self.dk}, dv={self.dv}, heads={self.heads}, relative={self.relative}, "
            f"max_size={self.max_size}, pool_attention={self.pool_attention}, attention_impl={self.attention_impl!r}"
        )
