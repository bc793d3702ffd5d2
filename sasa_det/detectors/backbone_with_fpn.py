"""A multi-scale backbone followed by a feature pyramid, laid out like torchvision's ``BackboneWithFPN``.

The module has the attributes ``body`` (the backbone) and ``fpn`` (the pyramid), so that inside a detector its
parameters are named ``backbone.body.*`` and ``backbone.fpn.*`` exactly as in torchvision's detection models and
their state dicts load into ours by name.
"""

from collections import OrderedDict
from collections.abc import Callable

from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from sasa_det.detectors.attention_fpn import AttentionFeaturePyramidNetwork, AttentionLastLevelP6P7
from sasa_det.detectors.options import FPN_KINDS
from sasa_det.layers import LocalSelfAttention2d

EXTRA_LEVELS = ("p6p7", "maxpool")


def _feature_level(name: str) -> int:
    """Pyramid level of a backbone feature name: ``"C3"`` → 3."""
    if len(name) < 2 or name[0] != "C" or not name[1:].isdigit():
        raise ValueError(f"backbone feature names must look like 'C3', got {name!r}")
    return int(name[1:])


class BackboneWithFPN(nn.Module):
    """Backbone features ``C_l`` turned into pyramid features ``P_l`` of ``out_channels`` channels each.

    Args:
        body: module mapping images ``[N, 3, H, W]`` to an ``OrderedDict`` of features named ``"C<level>"`` for
            consecutive levels, finest first (what :func:`sasa_det.backbones.build_backbone` returns).
        fpn: module mapping that ``OrderedDict`` to the pyramid ``OrderedDict`` (torchvision's
            ``FeaturePyramidNetwork`` or :class:`AttentionFeaturePyramidNetwork`), extra levels appended last.
        out_channels: channels of every pyramid level (what torchvision's detectors read).

    Forward: ``x [N, 3, H, W]`` → ``OrderedDict`` named ``"P<level>"`` from the finest input level upwards, e.g.
    ``P3 [N, C, H/8, W/8] … P7 [N, C, H/128, W/128]`` for RetinaNet (spatial sizes rounded up).
    """

    def __init__(self, body: nn.Module, fpn: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        features = self.body(x)
        levels = [_feature_level(name) for name in features]
        if levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"backbone features must be consecutive levels, got {list(features)}")
        pyramid = self.fpn(features)
        return OrderedDict((f"P{levels[0] + i}", p) for i, p in enumerate(pyramid.values()))


def build_fpn(
    kind: str,
    in_channels_list: list[int],
    out_channels: int = 256,
    extra_levels: str = "p6p7",
    attention_layer: Callable[..., nn.Module] = LocalSelfAttention2d,
) -> FeaturePyramidNetwork:
    """The pyramid over backbone features with ``in_channels_list`` channels (finest first).

    Args:
        kind: ``"conv"`` (torchvision's ``FeaturePyramidNetwork``) or ``"attention"`` (every 3×3 conv is a SASA
            layer, :class:`AttentionFeaturePyramidNetwork`).
        in_channels_list: channels of the backbone features, finest level first.
        out_channels: channels of every pyramid level.
        extra_levels: ``"p6p7"`` (RetinaNet: P6 = stride-2 op on P5, P7 = stride-2 op on ReLU(P6); torchvision's
            ``LastLevelP6P7(256, 256)`` of ``retinanet_resnet50_fpn``) or ``"maxpool"`` (Faster/Mask R-CNN: one
            extra level subsampled by 2, torchvision's ``LastLevelMaxPool``).
        attention_layer: ``attention_layer(in_channels, out_channels, stride=1)`` makes every attention layer of
            the ``"attention"`` variant (default: the SASA layer with the paper's values, Sec. 4.2: k = 7, 8 heads;
            pass e.g. ``SasaOptions(...).factory()``). Unused for ``"conv"``.
    """
    if kind not in FPN_KINDS:
        raise ValueError(f"unknown fpn {kind!r}; choose one of {FPN_KINDS}")
    if extra_levels not in EXTRA_LEVELS:
        raise ValueError(f"unknown extra_levels {extra_levels!r}; choose one of {EXTRA_LEVELS}")
    extra_blocks: ExtraFPNBlock
    if kind == "conv":
        if extra_levels == "p6p7":
            extra_blocks = LastLevelP6P7(out_channels, out_channels)
        else:
            extra_blocks = LastLevelMaxPool()
        return FeaturePyramidNetwork(in_channels_list, out_channels, extra_blocks=extra_blocks)
    if extra_levels == "p6p7":
        extra_blocks = AttentionLastLevelP6P7(out_channels, out_channels, attention_layer=attention_layer)
    else:
        extra_blocks = LastLevelMaxPool()
    return AttentionFeaturePyramidNetwork(
        in_channels_list, out_channels, extra_blocks=extra_blocks, attention_layer=attention_layer
    )


def backbone_with_fpn(
    body: nn.Module,
    in_features: list[str],
    fpn: str = "conv",
    fpn_channels: int = 256,
    extra_levels: str = "p6p7",
    attention_layer: Callable[..., nn.Module] = LocalSelfAttention2d,
) -> BackboneWithFPN:
    """Put a pyramid of kind ``fpn`` on the features ``in_features`` (e.g. ``["C3", "C4", "C5"]``) of ``body``.

    ``body`` must return exactly those features and expose ``out_channels`` (feature name → channels), as every
    backbone of :func:`sasa_det.backbones.build_backbone` built with ``out_features=in_features`` does.
    ``attention_layer`` makes the attention pyramid's layers (see :func:`build_fpn`).
    """
    if not in_features:
        raise ValueError("in_features must name at least one backbone feature, e.g. ['C3', 'C4', 'C5']")
    levels = [_feature_level(name) for name in in_features]
    if levels != list(range(levels[0], levels[0] + len(levels))):
        raise ValueError(f"in_features must be consecutive levels, finest first, got {in_features}")
    missing = [name for name in in_features if name not in body.out_channels]
    if missing:
        raise ValueError(f"backbone has no feature(s) {missing}; it provides {sorted(body.out_channels)}")
    in_channels_list = [int(body.out_channels[name]) for name in in_features]
    pyramid = build_fpn(fpn, in_channels_list, fpn_channels, extra_levels, attention_layer)
    return BackboneWithFPN(body, pyramid, fpn_channels)
