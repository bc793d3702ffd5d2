"""Feature pyramid whose 3×3 convolutions are stand-alone self-attention layers.

SASA paper (Ramachandran et al. 2019), Sec. 4.2 / Table 2 "Attention" rows: every 3×3 convolution of the FPN is
replaced by a local self-attention layer (k = 7, 8 heads, 256 channels); the strided ones (P6, P7) become
attention followed by 2×2 average pooling with stride 2. The 1×1 lateral convolutions and the top-down pathway
(nearest upsampling + sum) stay as in torchvision's ``FeaturePyramidNetwork``, whose forward is reused unchanged.

Where the paper is silent we keep torchvision's v1 FPN: no normalisation and no activation after the output
layers; P6 is computed from P5 (as torchvision's ``LastLevelP6P7(256, 256)``) with a ReLU between P6 and P7.
"""

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

from sasa_det.layers import LocalSelfAttention2d


class AttentionLastLevelP6P7(ExtraFPNBlock):
    """RetinaNet's extra levels with attention: ``P6 = SASA_s2(P5)``, ``P7 = SASA_s2(ReLU(P6))``.

    Each strided layer attends at full resolution then average-pools 2×2/2 (SASA paper, Sec. 4.2), so
    ``P6`` is ``[N, out_channels, ceil(H5/2), ceil(W5/2)]``. When ``in_channels != out_channels`` P6 is computed
    from the last backbone feature (C5) instead of P5, as torchvision's ``LastLevelP6P7`` does.

    ``attention_layer(in_channels, out_channels, stride=2)`` makes the two layers (default: the SASA layer
    with the paper's values, Sec. 4.2: k = 7, 8 heads; pass e.g. ``SasaOptions(...).factory()``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        attention_layer: Callable[..., nn.Module] = LocalSelfAttention2d,
    ) -> None:
        super().__init__()
        self.p6 = attention_layer(in_channels, out_channels, stride=2)
        self.p7 = attention_layer(out_channels, out_channels, stride=2)
        self.use_P5 = in_channels == out_channels

    def forward(self, p: list[Tensor], c: list[Tensor], names: list[str]) -> tuple[list[Tensor], list[str]]:
        """Append ``p6``, ``p7`` to the pyramid list ``p`` (``c``: backbone features, ``names``: level names)."""
        source = p[-1] if self.use_P5 else c[-1]
        p6 = self.p6(source)
        p7 = self.p7(F.relu(p6))
        return p + [p6, p7], names + ["p6", "p7"]


class AttentionFeaturePyramidNetwork(FeaturePyramidNetwork):
    """torchvision's ``FeaturePyramidNetwork`` with every 3×3 output conv replaced by ``LocalSelfAttention2d``.

    Args:
        in_channels_list: channels of the backbone features, finest level first.
        out_channels: channels of every pyramid level (must be divisible by ``heads`` and leave an even head
            width for the relative embedding).
        extra_blocks: extra levels (:class:`AttentionLastLevelP6P7` for RetinaNet, torchvision's
            ``LastLevelMaxPool`` for R-CNN), or ``None``.
        attention_layer: ``attention_layer(out_channels, out_channels)`` makes each output layer (default: the
            SASA layer with the paper's values, Sec. 4.2: k = 7, 8 heads).

    Forward: ``OrderedDict`` of backbone features ``[N, C_l, H_l, W_l]`` → ``OrderedDict`` with the same names of
    ``[N, out_channels, H_l, W_l]``, then the extra levels. Parameter names: ``inner_blocks.<i>.0.*`` (1×1 conv
    laterals, as torchvision), ``layer_blocks.<i>.{query,key,value,rel_row,rel_col}`` (attention).
    """

    def __init__(
        self,
        in_channels_list: list[int],
        out_channels: int = 256,  # SASA paper, Sec. 4.2: d = 256
        extra_blocks: ExtraFPNBlock | None = None,
        attention_layer: Callable[..., nn.Module] = LocalSelfAttention2d,
    ) -> None:
        super().__init__(in_channels_list, out_channels, extra_blocks=extra_blocks)
        self.layer_blocks = nn.ModuleList(attention_layer(out_channels, out_channels) for _ in in_channels_list)
