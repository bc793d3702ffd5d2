"""Named backbone presets of both papers and the builders that read them.

Presets (block counts per stage from the SASA paper Sec. 4.1 and He et al. 2016: 26 = 1,2,4,1;
38 = 2,3,5,2; 50 = 3,4,6,3; 101 = 3,4,23,3; 152 = 3,8,36,3):

* ``resnet26/38/50/101/152``: convolutional stem, 3x3 convolutions in every stage.
* ``sasa_resnet26/38/50``: attention stem, SASA in every stage.
* ``sasa_resnet26/38/50_convstem``: convolutional stem, SASA in every stage.
* ``aa_resnet50/101/152``: convolutional stem; stage 1 convolutional, stages 2-4 augmented.

``sasa_resnet*`` are the SASA paper's "full attention" models (Table 1: attention stem and attention in
every bottleneck); ``*_convstem`` its "conv-stem + attention" models. ``aa_resnet*`` augment one 3x3
convolution per residual block in the last three stages (AA paper Sec. 4.2). Any other mix is an override
of ``stage_ops``/``stem``/``blocks_per_stage``.
"""

from __future__ import annotations

import inspect
from typing import Any

from sasa_det.backbones.classifier import ImageClassifier
from sasa_det.backbones.resnet import ResNet

__all__ = ["PRESETS", "backbone_arguments", "build_backbone", "build_classifier", "list_backbones"]

_DEPTHS = {
    26: (1, 2, 4, 1),  # SASA Sec. 4.1
    38: (2, 3, 5, 2),  # SASA Sec. 4.1
    50: (3, 4, 6, 3),  # He et al. 2016, Table 1
    101: (3, 4, 23, 3),  # He et al. 2016, Table 1
    152: (3, 8, 36, 3),  # He et al. 2016, Table 1
}

PRESETS: dict[str, dict[str, Any]] = {}
for _depth in (26, 38, 50, 101, 152):
    PRESETS[f"resnet{_depth}"] = {"blocks_per_stage": _DEPTHS[_depth], "stage_ops": "conv", "stem": "conv"}
for _depth in (26, 38, 50):
    PRESETS[f"sasa_resnet{_depth}"] = {"blocks_per_stage": _DEPTHS[_depth], "stage_ops": "sasa", "stem": "attention"}
    PRESETS[f"sasa_resnet{_depth}_convstem"] = {
        "blocks_per_stage": _DEPTHS[_depth],
        "stage_ops": "sasa",
        "stem": "conv",
    }
for _depth in (50, 101, 152):
    # AA Sec. 4.2: augmented convolutions in the last 3 stages of the ImageNet ResNets.
    PRESETS[f"aa_resnet{_depth}"] = {
        "blocks_per_stage": _DEPTHS[_depth],
        "stage_ops": ("conv", "aa", "aa", "aa"),
        "stem": "conv",
    }

_RESNET_ARGS = tuple(inspect.signature(ResNet.__init__).parameters)[1:]


def list_backbones() -> list[str]:
    """Names of the backbone presets, e.g. ``["resnet26", ..., "aa_resnet152"]``."""
    return list(PRESETS)


def backbone_arguments(name: str, **overrides: Any) -> dict[str, Any]:
    """The :class:`ResNet` constructor arguments of preset ``name`` with ``overrides`` applied.

    Raises:
        ValueError: unknown preset name or override key (the message lists the valid ones).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {list_backbones()}")
    unknown = sorted(k for k in overrides if k not in _RESNET_ARGS)
    if unknown:
        raise ValueError(f"unknown backbone override(s) {unknown} for {name!r}; valid ones are {list(_RESNET_ARGS)}")
    return {**PRESETS[name], **overrides}


def build_backbone(name: str, **overrides: Any) -> ResNet:
    """Build preset ``name`` as a multi-scale feature extractor.

    ``overrides`` are :class:`~sasa_det.backbones.resnet.ResNet` constructor arguments (``norm``,
    ``frozen_stages``, ``out_features``, ``image_size``, ``stage_ops``, ``stem``, ``base_width``, ...).
    The result maps ``x [N, 3, H, W]`` to ``OrderedDict`` ``{"C2": [N, 256, H/4, W/4], ...,
    "C5": [N, 2048, H/32, W/32]}`` (sizes rounded up) and has ``out_channels`` / ``strides`` dicts.

    Raises:
        ValueError: unknown name or override (the message lists the valid ones), or a bad value.
    """
    return ResNet(**backbone_arguments(name, **overrides))


def build_classifier(name: str, num_classes: int = 1000, dropout: float = 0.0, **overrides: Any) -> ImageClassifier:
    """Build preset ``name`` as an image classifier: backbone (C5 only) + global average pool + ``fc``.

    ``[N, 3, H, W] -> [N, num_classes]``. ``overrides`` as in :func:`build_backbone` (``out_features``
    is fixed to ``("C5",)``). Parameter names are ``backbone.<ResNet names>`` and ``fc.weight``/``fc.bias``.
    """
    if "out_features" in overrides:
        raise ValueError("build_classifier uses the C5 feature; do not pass out_features")
    backbone = build_backbone(name, out_features=("C5",), **overrides)
    return ImageClassifier(backbone, num_classes=num_classes, dropout=dropout)
