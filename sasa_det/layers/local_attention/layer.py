"""Stand-alone self-attention over a local window (Ramachandran et al. 2019, "SASA")."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention_layer import QueryAttention, attribute_set_to
from ..multi_head import head_width
from . import defaults
from .registry import available_local_attention_impls, resolve_local_attention_impl

__all__ = ["LocalSelfAttention2d"]


def _query_like(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """An empty stand-in with the device, dtype (autocast included) and shape the queries will have, for
    choosing an implementation before projecting."""
    dtype = x.dtype
    device_type = x.device.type
    try:
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError, RuntimeError):  # torch < 2.4: CUDA-only autocast queries
        if device_type == "cuda" and torch.is_autocast_enabled():
            dtype = torch.get_autocast_gpu_dtype()
    return torch.empty((), device=x.device, dtype=dtype).expand(shape)


class LocalSelfAttention2d(nn.Module):
    """SASA layer, Eq. 3: ``y_ij = sum_{ab in N_k(i,j)} softmax_ab(q_ij·k_ab + q_ij·r_{a-i,b-j}) v_ab``.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, ceil(H/stride), ceil(W/stride))``, any ``H, W >= 1``.

    * ``query``, ``key``, ``value``: dense 1×1 convolutions without bias (C_in -> C_out each); their
      outputs are split into ``heads`` heads of ``d = C_out / heads`` channels. Dense projections are
      what reproduce the paper's parameter counts (Table 1). There is no output projection (the
      bottleneck's following 1×1 conv mixes the heads).
    * Relative embedding (Sec. 2.2): within every head the first ``d/2`` channels of the query meet
      the row-offset embedding ``rel_row[a-i]`` and the last ``d/2`` the column-offset embedding
      ``rel_col[b-j]``; both tables have ``k`` entries of ``d/2`` and are shared across heads.
    * Borders (the paper is silent): keys and values outside the image are zero and still take part in
      the softmax (``mask_padding=False``, what public reimplementations do), or are excluded
      (``mask_padding=True``).
    * ``stride > 1``: attention at full resolution, then ``avg_pool2d(stride, stride, ceil_mode=True)``
      (Sec. 3.1: spatial downsampling by 2×2 average pooling with stride 2 after the attention).

    Args:
        in_channels: input channels.
        out_channels: output channels; divisible by ``heads`` with an even per-head width.
        kernel_size: odd window size ``k``.
        heads: attention heads.
        stride: output stride (average pooling after the attention).
        scaled: divide logits by ``sqrt(d)``; the paper's Eq. 3 has no scaling.
        mask_padding: exclude out-of-image keys from the softmax instead of zero keys/values.
        rel_init: ``"content_scale"`` or ``"inv_sqrt_d"``: the relative tables' init (:meth:`reset_parameters`).
        impl: ``"auto"`` (fastest registered implementation for the input's device), ``"triton"``
            (fused CUDA kernels, the CUDA default), ``"cpp"``
            (compiled CPU loop, the CPU default), ``"shift"`` (portable path, CPU and GPU), ``"halo"``
            (blocked queries with key/value halos), or ``"unfold"``; further implementations (the tests'
            ``"reference"``) can be registered with :func:`sasa_det.layers.register_local_attention_impl`.

    The defaults of ``kernel_size``, ``heads``, ``scaled``, ``mask_padding``, ``impl`` and ``rel_init`` are declared once,
    in :class:`~.options.SasaOptions`. The layer is an :class:`~sasa_det.layers.attention_layer.AttentionLayer`.
    """

    #: the kind of attention layer (:class:`~sasa_det.layers.attention_layer.AttentionLayer`)
    attention_kind = "sasa"
    #: the implementation used while exporting: ``F.unfold`` gathers, elementwise products, softmax (``"shift"``
    #: is a hand-written ``autograd.Function`` that the ONNX exporter cannot lower)
    portable_impl = "unfold"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = defaults.KERNEL_SIZE,  # Sec. 4.1: spatial extent k = 7 everywhere
        heads: int = defaults.HEADS,  # Sec. 4.1: 8 attention heads
        stride: int = 1,
        scaled: bool = defaults.SCALED,  # Eq. 3: no 1/sqrt(d) scaling
        mask_padding: bool = defaults.MASK_PADDING,  # paper silent; zero padding as in public reimplementations
        impl: str = defaults.IMPL,
        rel_init: str = defaults.REL_INIT,  # paper silent; see reset_parameters
    ) -> None:
        super().__init__()
        if head_width(in_channels, out_channels, heads) % 2 != 0:
            raise ValueError(
                f"the per-head width out_channels/heads={out_channels // heads} must be even "
                "(half of it meets the row embedding, half the column embedding)"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if rel_init not in defaults.REL_INITS:
            raise ValueError(f"unknown rel_init {rel_init!r}; choose one of {defaults.REL_INITS}")
        if impl not in available_local_attention_impls():
            raise ValueError(f"unknown impl {impl!r}; choose one of {available_local_attention_impls()}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.heads = heads
        self.head_channels = out_channels // heads
        self.stride = stride
        self.scaled = scaled
        self.mask_padding = mask_padding
        self.impl = impl
        self.rel_init = rel_init
        self.query = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.key = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.value = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.rel_row = nn.Parameter(torch.empty(kernel_size, self.head_channels // 2))
        self.rel_col = nn.Parameter(torch.empty(kernel_size, self.head_channels // 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the layer (the paper gives no initialisation; these are our choices).

        * ``query``/``key``/``value``: normal with std ``1/sqrt(C_in)`` (variance preserving for a
          linear map, as a 1×1 conv's fan-in init would be).
        * ``rel_row``/``rel_col`` (``rel_init="content_scale"``, the default): standard normal. For
          unit-variance inputs the queries and keys have unit-variance entries, so a content logit ``q·k`` has
          variance ``d`` and a relative logit ``q_row·r_row + q_col·r_col`` (two ``d/2``-wide products) variance
          ``d·std²``: std 1 starts both at one spread, and the softmax sees position from the first step.
          ``rel_init="inv_sqrt_d"`` (std ``1/sqrt(d)``, the AA paper's code) starts the relative logits
          ``sqrt(d)`` times narrower; from scratch the tables then take hundreds of steps to matter (docs/zoo.md).
        """
        std = 1.0 / math.sqrt(self.in_channels)
        for projection in (self.query, self.key, self.value):
            nn.init.normal_(projection.weight, std=std)
        rel_std = 1.0 if self.rel_init == "content_scale" else self.head_channels**-0.5
        nn.init.normal_(self.rel_row, std=rel_std)
        nn.init.normal_(self.rel_col, std=rel_std)

    def no_weight_decay(self) -> set[str]:
        """Names of this layer's parameters that take no weight decay: the relative position tables."""
        return {"rel_row", "rel_col"}

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W) -> (N, C_out, ceil(H/stride), ceil(W/stride))``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        n, _, height, width = x.shape
        shape = (n, self.heads, self.head_channels, height, width)
        impl = resolve_local_attention_impl(self.impl, _query_like(x, shape))
        scale = self.head_channels**-0.5 if self.scaled else 1.0
        if impl.fused is not None:
            weight = torch.cat([self.query.weight, self.key.weight, self.value.weight]).flatten(1)
            out = impl.fused(
                x, weight, self.rel_row, self.rel_col, self.heads, self.kernel_size, self.mask_padding, scale
            )
        else:
            q = self.query(x).reshape(shape)
            k = self.key(x).reshape(shape)
            v = self.value(x).reshape(shape)
            if self.scaled:
                q = q * scale
            out = impl.fn(q, k, v, self.rel_row, self.rel_col, self.kernel_size, self.mask_padding)
            out = out.reshape(n, self.out_channels, height, width)
        if self.stride > 1:
            out = F.avg_pool2d(out, self.stride, self.stride, ceil_mode=True)
        return out

    def attention_flops(self, height: int, width: int) -> int:
        """FLOPs (multiply-add = 2) of the attention for one ``height × width`` input.

        Counts, for every query at full input resolution and each of its ``k²`` window positions,
        the ``d``-wide dot products ``q·k`` and ``q·r`` and the weighted sum ``a·v``, summed over heads
        (``3 · 2 · H·W·k²·C_out``). The relative term is counted as Eq. 3 writes it (one dot product per
        key); the implementation factorises it into row and column parts and does less. The 1×1
        projections are convolutions and counted elsewhere.
        """
        positions = height * width * self.kernel_size**2
        return 3 * 2 * positions * self.out_channels

    def attention_map_size(self, height: int, width: int) -> tuple[int, int]:
        """The attention runs at the input's resolution (before the stride's pooling): ``(height, width)``."""
        return height, width

    @torch.no_grad()
    def attention_weights(self, x: Tensor, row: int, col: int) -> QueryAttention:
        """The attention of query ``(row, col)`` for input ``x`` ``(1, C_in, H, W)``, per head.

        Eq. 3's softmax over the ``k×k`` window around the query of ``q·k_ab + q_row·rel_row[a-i] +
        q_col·rel_col[b-j]``, computed explicitly in float64. ``weights`` ``(heads, H, W)`` are zero outside
        the window. With zero padding (the default) window positions outside the map are zero keys that
        still take part in the softmax: their mass is ``outside`` ``(heads,)``, so the weights inside the
        map sum to ``1 - outside`` (0 with ``mask_padding``).
        """
        _, _, height, width = x.shape
        heads, d, size = self.heads, self.head_channels, self.kernel_size
        radius = size // 2
        q = self.query(x)[0, :, row, col].reshape(heads, d).double()
        if self.scaled:
            q = q * d**-0.5
        keys = F.pad(self.key(x), (radius,) * 4)[0, :, row : row + size, col : col + size]
        content = torch.einsum("hd,hdab->hab", q, keys.reshape(heads, d, size, size).double())
        half = d // 2
        rel_rows = q[:, :half] @ self.rel_row.double().T  # (heads, k): offset a - radius
        rel_cols = q[:, half:] @ self.rel_col.double().T
        logits = content + rel_rows[:, :, None] + rel_cols[:, None, :]
        rows = torch.arange(size) + row - radius
        cols = torch.arange(size) + col - radius
        inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
        if self.mask_padding:
            logits = logits.masked_fill(~inside.to(logits.device), float("-inf"))
        window = logits.reshape(heads, -1).softmax(dim=-1).reshape(heads, size, size)
        weights = torch.zeros(heads, height, width, dtype=torch.float64, device=x.device)
        r0, r1 = max(row - radius, 0), min(row + radius + 1, height)
        c0, c1 = max(col - radius, 0), min(col + radius + 1, width)
        top, left = row - radius, col - radius  # the window's first row and column on the map
        weights[:, r0:r1, c0:c1] = window[:, r0 - top : r1 - top, c0 - left : c1 - left]
        outside = 1.0 - weights.sum(dim=(1, 2))
        return QueryAttention(weights.float(), outside.clamp_min(0).float())

    def portable_path(self) -> AbstractContextManager[str]:
        """Inside the block the layer runs :attr:`portable_impl` (plain PyTorch operators)."""
        return attribute_set_to(self, "impl", self.portable_impl)

    def resize_position_table(self, name: str, table: Tensor) -> None:
        """None: ``rel_row``/``rel_col`` are sized by the window ``k``, not by the map (another ``k`` is
        another layer)."""
        return None

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, heads={self.heads}, "
            f"stride={self.stride}, scaled={self.scaled}, mask_padding={self.mask_padding}, impl={self.impl!r}, "
            f"rel_init={self.rel_init!r}"
        )
