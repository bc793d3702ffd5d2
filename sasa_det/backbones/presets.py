"""The builder that turns a backbone's options into a network, and the tables of what a stage, the stem and the
norms can be.

:func:`backbone_from_options` is the one place that turns :class:`~sasa_det.backbones.options.ResNetOptions`
(and the presets of :mod:`sasa_det.backbones.options`) into layer factories for
:class:`~sasa_det.backbones.resnet.ResNet`: :data:`STAGE_OPS`, :data:`STEMS` and :data:`NORM_LAYERS` name
what a stage, the stem and the norms can be.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from sasa_det.backbones.classifier import ImageClassifier
from sasa_det.backbones.options import (
    PRESETS,
    AAOptions,
    AttentionStemOptions,
    ResNetOptions,
    list_backbones,
)
from sasa_det.backbones.resnet import (
    FEATURE_NAMES,
    ResNet,
)
from sasa_det.backbones.stage_ops import NORM_LAYERS, STAGE_OPS, STEMS, set_fields
from sasa_det.backbones.weight_parts import format_parts, parts_record, weights_by_part
from sasa_det.backbones.weights import load_backbone_weights
from sasa_det.layers import SasaOptions

__all__ = [
    "NORM_LAYERS",
    "PRESETS",
    "STAGE_OPS",
    "STEMS",
    "AAOptions",
    "AttentionStemOptions",
    "ResNetOptions",
    "backbone_from_options",
    "build_backbone",
    "build_classifier",
    "list_backbones",
]

logger = logging.getLogger(__name__)

#: Largest input side when neither the options nor the caller give one: both papers' ImageNet resolution.
DEFAULT_IMAGE_SIZE = 224
# Options passed to ResNet as they are (when set).
_RESNET_ARGUMENTS = ("base_width", "frozen_stages", "zero_init_residual")


def _choose(table: dict[str, Any], name: str, what: str, context: str = "") -> Any:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}{context}; choose from {list(table)}")
    return table[name]


def backbone_from_options(
    options: ResNetOptions,
    sasa: SasaOptions | None = None,
    out_features: Sequence[str] = FEATURE_NAMES,
    in_channels: int = 3,
) -> ResNet:
    """The :class:`ResNet` that ``options`` describe, its weights loaded when ``options.weights`` names a file.

    Each stage gets the factory :data:`STAGE_OPS` makes for its operation (SASA layers with ``sasa``, the
    paper's values by default), the stem and the norms theirs (:data:`STEMS`, :data:`NORM_LAYERS`); an AA
    stage's relative tables are sized for ``options.image_size`` (default :data:`DEFAULT_IMAGE_SIZE`).

    Raises:
        ValueError: an unknown preset, stage operation, stem or norm (naming the valid ones), or a bad value.
        CheckpointFileError: unreadable weights.
    """
    preset = _choose(PRESETS, options.name, "backbone")
    stage_ops = options.stage_ops or preset["stage_ops"]
    names = [stage_ops] * 4 if isinstance(stage_ops, str) else list(stage_ops)
    bad_pooled = [s for s in options.aa.pool_attention_stages if s not in (1, 2, 3, 4)]
    if bad_pooled:
        raise ValueError(
            f"aa.pool_attention_stages are stage numbers 1..4, got {list(options.aa.pool_attention_stages)}"
        )
    sasa = sasa or SasaOptions()
    image_size = options.image_size or DEFAULT_IMAGE_SIZE
    if int(image_size) < 1:
        raise ValueError(f"image_size must be >= 1 (the largest input side), got {image_size}")
    spatial_ops = [
        _choose(STAGE_OPS, name, "stage operation", f" in stage_ops={names}")(options, sasa, stage, int(image_size))
        for stage, name in enumerate(names, start=1)
    ]
    backbone = ResNet(
        blocks_per_stage=options.blocks_per_stage or preset["blocks_per_stage"],
        spatial_ops=spatial_ops,
        stem=_choose(STEMS, options.stem or preset["stem"], "stem")(options),
        norm_layer=_choose(NORM_LAYERS, options.norm or "bn", "norm"),
        out_features=out_features,
        in_channels=in_channels,
        **{name: value for name, value in set_fields(options).items() if name in _RESNET_ARGUMENTS},
    )
    if options.weights:
        _load_weights(backbone, options.weights)
    return backbone


def _load_weights(backbone: ResNet, path: str) -> None:
    """Load ``backbone.weights``, print what was set by part and keep that report as ``backbone.weights_report``
    (the runner writes it into the run's ``init_from_report.json``)."""
    missing, unexpected = load_backbone_weights(backbone, path)
    skipped = set(missing)
    loaded = [k for k in backbone.state_dict() if k not in skipped and not k.endswith("num_batches_tracked")]
    parts = weights_by_part(backbone, loaded, unused=unexpected)
    backbone.weights_report = {
        "source": str(path),
        "parts": parts_record(parts),
        "missing": list(missing),
        "unused": list(unexpected),
    }
    if os.environ.get("RANK", "0") == "0":  # once per training, not once per process
        print(f"backbone weights {path}, by part:\n{format_parts(parts)}", flush=True)
    if missing or unexpected:
        logger.warning(
            "backbone weights %s: %d missing keys %s, %d unexpected keys %s",
            path,
            len(missing),
            list(missing)[:10],
            len(unexpected),
            list(unexpected)[:10],
        )
    else:
        logger.info("backbone weights %s loaded: all keys matched", path)


def build_backbone(
    name: str = "resnet50",
    *,
    sasa: SasaOptions | None = None,
    out_features: Sequence[str] = FEATURE_NAMES,
    in_channels: int = 3,
    **overrides: Any,
) -> ResNet:
    """Build preset ``name`` as a multi-scale feature extractor: :func:`backbone_from_options` of
    ``ResNetOptions(name, **overrides)``.

    ``overrides`` are :class:`ResNetOptions` fields (``norm``, ``frozen_stages``, ``image_size``, ``stage_ops``,
    ``stem``, ``base_width``, ``aa=AAOptions(...)``, ...). The result maps ``x [N, 3, H, W]`` to ``OrderedDict``
    ``{"C2": [N, 256, H/4, W/4], ..., "C5": [N, 2048, H/32, W/32]}`` (sizes rounded up) and has
    ``out_channels`` / ``strides`` dicts.

    Raises:
        ValueError: unknown name or override (the message lists the valid ones), or a bad value.
    """
    valid = [f.name for f in fields(ResNetOptions) if f.name != "name"]
    unknown = sorted(k for k in overrides if k not in valid)
    if unknown:
        raise ValueError(f"unknown backbone override(s) {unknown} for {name!r}; valid ones are {valid}")
    return backbone_from_options(ResNetOptions(name=name, **overrides), sasa, out_features, in_channels)


def build_classifier(
    name: str, num_classes: int = 1000, dropout: float = 0.0, sasa: SasaOptions | None = None, **overrides: Any
) -> ImageClassifier:
    """Build preset ``name`` as an image classifier: backbone (C5 only) + global average pool + ``fc``.

    ``[N, 3, H, W] -> [N, num_classes]``. ``overrides`` as in :func:`build_backbone` (``out_features``
    is fixed to ``("C5",)``). Parameter names are ``backbone.<ResNet names>`` and ``fc.weight``/``fc.bias``.
    """
    if "out_features" in overrides:
        raise ValueError("build_classifier uses the C5 feature; do not pass out_features")
    backbone = build_backbone(name, sasa=sasa, out_features=("C5",), **overrides)
    return ImageClassifier(backbone, num_classes=num_classes, dropout=dropout)
