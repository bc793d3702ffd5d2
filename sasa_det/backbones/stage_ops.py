"""What a backbone's stages, stem and norms can be: the tables :func:`~sasa_det.backbones.presets.backbone_from_options`
builds from, by name.

A new attention layer is one entry of :data:`STAGE_OPS`. The tables name their entries without importing torch:
each entry imports the layer it makes when it is called, so a config's choices are checked without loading it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from functools import partial
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from torch import nn

    from sasa_det.backbones.resnet import SpatialOp

#: a backbone's options (:class:`~sasa_det.backbones.options.ResNetOptions`, which names this module's tables) and
#: the SASA layers' (:class:`~sasa_det.layers.SasaOptions`)
ResNetOptions = Any
SasaOptions = Any

__all__ = ["NORM_LAYERS", "STAGE_OPS", "STEMS", "set_fields"]


def set_fields(options: Any, *leave_out: str) -> dict[str, Any]:
    """The fields of an options dataclass that are set (not None), as keyword arguments."""
    values = {f.name: getattr(options, f.name) for f in fields(options) if f.name not in leave_out}
    return {name: value for name, value in values.items() if value is not None}


def _augmented_conv(options: ResNetOptions, sasa: SasaOptions, stage: int, image_size: int) -> SpatialOp:
    """AA stage ``stage``: the attention runs on the block's output grid (stride 4 * 2**(stage-1)), or on that
    grid 3x3/2 average-pooled where asked; its relative tables cover that map for ``image_size``."""
    from sasa_det.backbones.resnet import FEATURE_NAMES, FEATURE_STRIDES
    from sasa_det.layers import AugmentedConv2d

    pooled = stage in options.aa.pool_attention_stages
    side = math.ceil(image_size / FEATURE_STRIDES[FEATURE_NAMES[stage - 1]])
    if pooled:
        side = math.ceil(side / 2)
    layer_options = set_fields(options.aa, "pool_attention_stages")
    return partial(AugmentedConv2d, kernel_size=3, max_size=(side, side), pool_attention=pooled, **layer_options)


def _conv(options: ResNetOptions, sasa: SasaOptions, stage: int, image_size: int) -> SpatialOp:
    """The bottleneck's 3x3 convolution."""
    from sasa_det.backbones.resnet import conv3x3

    return conv3x3


#: What a stage's spatial operation can be: name -> ``make(options, sasa, stage, image_size)`` giving the
#: stage's :data:`~sasa_det.backbones.resnet.SpatialOp`. A new attention layer is one entry here.
STAGE_OPS: dict[str, Callable[[ResNetOptions, SasaOptions, int, int], SpatialOp]] = {
    "conv": _conv,
    "sasa": lambda options, sasa, stage, image_size: sasa.factory(),
    "aa": _augmented_conv,
}


def _attention_stem(options: ResNetOptions) -> Callable[[int, int], nn.Module]:
    """The SASA paper's spatially-aware stem; with ``frozen_bn`` its own BatchNorm is frozen too."""

    def build(in_channels: int, out_channels: int) -> nn.Module:
        from sasa_det.backbones.resnet import replace_batchnorm_with_frozen
        from sasa_det.layers import SpatiallyAwareStem

        stem = SpatiallyAwareStem(in_channels, out_channels, **set_fields(options.attention_stem))
        return replace_batchnorm_with_frozen(stem) if options.norm == "frozen_bn" else stem

    return build


#: What the stem can be: name -> ``make(options)`` giving ResNet's ``stem`` factory (None: its conv stem).
STEMS: dict[str, Callable[[ResNetOptions], Optional[Callable[[int, int], nn.Module]]]] = {
    "conv": lambda options: None,
    "attention": _attention_stem,
}


def _batch_norm(channels: int) -> nn.Module:
    from torch import nn

    return nn.BatchNorm2d(channels)


def _frozen_batch_norm(channels: int) -> nn.Module:
    from torchvision.ops import FrozenBatchNorm2d

    return FrozenBatchNorm2d(channels)


#: What the norm layers can be: ``bn`` (BatchNorm; the trainer converts it to SyncBatchNorm on several
#: devices) or ``frozen_bn`` (torchvision's FrozenBatchNorm2d: fixed statistics and affine values).
NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {"bn": _batch_norm, "frozen_bn": _frozen_batch_norm}
