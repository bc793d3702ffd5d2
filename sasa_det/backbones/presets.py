"""Named backbone presets of both papers, the options that override them, and the builder that reads both.

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

:class:`ResNetOptions` declares every option of a backbone (it is the ``backbone`` section of a model's
config); :func:`backbone_from_options` is the one place that turns them into layer factories for
:class:`~sasa_det.backbones.resnet.ResNet`: :data:`STAGE_OPS`, :data:`STEMS` and :data:`NORM_LAYERS` name
what a stage, the stem and the norms can be.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, ClassVar, Optional

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from sasa_det.backbones.classifier import ImageClassifier
from sasa_det.backbones.resnet import (
    FEATURE_NAMES,
    FEATURE_STRIDES,
    ResNet,
    SpatialOp,
    check_stage_options,
    conv3x3,
    replace_batchnorm_with_frozen,
)
from sasa_det.backbones.weights import load_backbone_weights
from sasa_det.choices import choice
from sasa_det.layers import AugmentedConv2d, SasaOptions, SpatiallyAwareStem

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

#: Largest input side when neither the options nor the caller give one: both papers' ImageNet resolution.
DEFAULT_IMAGE_SIZE = 224
# Options passed to ResNet as they are (when set).
_RESNET_ARGUMENTS = ("base_width", "frozen_stages", "zero_init_residual")


def list_backbones() -> list[str]:
    """Names of the backbone presets, e.g. ``["resnet26", ..., "aa_resnet152"]``."""
    return list(PRESETS)


def _set_fields(options: Any, *leave_out: str) -> dict[str, Any]:
    """The fields of an options dataclass that are set (not None), as keyword arguments."""
    values = {f.name: getattr(options, f.name) for f in fields(options) if f.name not in leave_out}
    return {name: value for name, value in values.items() if value is not None}


@dataclass
class AttentionStemOptions:
    """The spatially-aware attention stem of ``stem: attention`` (SASA App. A.1); null = the layer's value."""

    #: attention heads (SASA Sec. 4.1 / App. A.1: 4)
    heads: Optional[int] = None
    #: value mixtures m (SASA App. A.1: not stated; the layer's 4)
    mixtures: Optional[int] = None


@dataclass
class AAOptions:
    """Every attention-augmented convolution of the ``aa`` stages; null = the layer's value.

    Every field but ``pool_attention_stages`` is a keyword argument of
    :class:`~sasa_det.layers.AugmentedConv2d`, passed as it is.
    """

    #: kappa = d_k / F_out (AA Sec. 4.2: 0.2)
    dk_ratio: Optional[float] = None
    #: upsilon = d_v / F_out (AA Sec. 4.2: 0.1)
    dv_ratio: Optional[float] = None
    #: attention heads N_h (AA Sec. 4.2: 8)
    heads: Optional[int] = None
    #: add the 2-D relative position logits (AA Sec. 3.2); false = the paper's "no position encoding" ablation
    #: (AA-ResNet-50 top-1: 77.5 without, 77.7 with relative logits); null = the layer's (true)
    relative: Optional[bool] = None
    #: stages (1..4) whose attention runs on a 3x3/2 average-pooled map, upsampled back (detection resolutions)
    pool_attention_stages: list[int] = field(default_factory=list)


@dataclass
class ResNetOptions:
    """A backbone: a preset and what overrides it; a null field keeps the preset's value (or :class:`ResNet`'s).

    The ``backbone`` section of a model's config (``model.backbone: NAME`` is shorthand for ``name``).
    """

    #: a preset of sasa_det.backbones.list_backbones()
    name: str = choice(list_backbones, default="resnet50")
    #: backbone weights to start from: a classification checkpoint, classifier or backbone state_dict, torchvision
    #: ResNet weights
    weights: Optional[str] = None
    #: spatial op per stage, 4 of "conv" | "sasa" | "aa"
    stage_ops: Optional[list[str]] = choice(lambda: list(STAGE_OPS), default=None)
    #: "conv" | "attention" (SASA spatially-aware stem)
    stem: Optional[str] = choice(lambda: list(STEMS), default=None)
    #: residual blocks of stages 1-4
    blocks_per_stage: Optional[list[int]] = None
    #: stage-1 bottleneck width (64 in the papers)
    base_width: Optional[int] = None
    #: "bn" | "frozen_bn" (fixed statistics, for fine-tuning with small batches)
    norm: Optional[str] = choice(lambda: list(NORM_LAYERS), default=None)
    #: 0 = train all; n = freeze the stem and stages 1..n
    frozen_stages: Optional[int] = None
    #: start each residual branch as the identity
    zero_init_residual: Optional[bool] = None
    #: largest input side (sizes AA relative tables); null = derived from the data
    image_size: Optional[int] = None
    #: the attention stem's options
    attention_stem: AttentionStemOptions = field(default_factory=AttentionStemOptions)
    #: the augmented convolutions' options
    aa: AAOptions = field(default_factory=AAOptions)

    #: Former keys of this section -> their keys now (the config accepts the old ones with a deprecation message).
    renamed_keys: ClassVar[dict[str, str]] = {
        "stem_heads": "attention_stem.heads",
        "stem_mixtures": "attention_stem.mixtures",
        "aa_dk_ratio": "aa.dk_ratio",
        "aa_dv_ratio": "aa.dv_ratio",
        "aa_heads": "aa.heads",
        "aa_pool_attention_stages": "aa.pool_attention_stages",
    }

    def validate(self) -> None:
        """The stage rules :class:`ResNet` applies (:func:`~sasa_det.backbones.resnet.check_stage_options`)."""
        check_stage_options(self.stage_ops, self.frozen_stages)


def _augmented_conv(options: ResNetOptions, sasa: SasaOptions, stage: int, image_size: int) -> SpatialOp:
    """AA stage ``stage``: the attention runs on the block's output grid (stride 4 * 2**(stage-1)), or on that
    grid 3x3/2 average-pooled where asked; its relative tables cover that map for ``image_size``."""
    pooled = stage in options.aa.pool_attention_stages
    side = math.ceil(image_size / FEATURE_STRIDES[FEATURE_NAMES[stage - 1]])
    if pooled:
        side = math.ceil(side / 2)
    layer_options = _set_fields(options.aa, "pool_attention_stages")
    return partial(AugmentedConv2d, kernel_size=3, max_size=(side, side), pool_attention=pooled, **layer_options)


#: What a stage's spatial operation can be: name -> ``make(options, sasa, stage, image_size)`` giving the
#: stage's :data:`~sasa_det.backbones.resnet.SpatialOp`. A new attention layer is one entry here.
STAGE_OPS: dict[str, Callable[[ResNetOptions, SasaOptions, int, int], SpatialOp]] = {
    "conv": lambda options, sasa, stage, image_size: conv3x3,
    "sasa": lambda options, sasa, stage, image_size: sasa.factory(),
    "aa": _augmented_conv,
}


def _attention_stem(options: ResNetOptions) -> Callable[[int, int], nn.Module]:
    """The SASA paper's spatially-aware stem; with ``frozen_bn`` its own BatchNorm is frozen too."""

    def build(in_channels: int, out_channels: int) -> nn.Module:
        stem = SpatiallyAwareStem(in_channels, out_channels, **_set_fields(options.attention_stem))
        return replace_batchnorm_with_frozen(stem) if options.norm == "frozen_bn" else stem

    return build


#: What the stem can be: name -> ``make(options)`` giving ResNet's ``stem`` factory (None: its conv stem).
STEMS: dict[str, Callable[[ResNetOptions], Optional[Callable[[int, int], nn.Module]]]] = {
    "conv": lambda options: None,
    "attention": _attention_stem,
}

#: What the norm layers can be: ``bn`` (BatchNorm; the trainer converts it to SyncBatchNorm on several
#: devices) or ``frozen_bn`` (torchvision's FrozenBatchNorm2d: fixed statistics and affine values).
NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {"bn": nn.BatchNorm2d, "frozen_bn": FrozenBatchNorm2d}


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
        **{name: value for name, value in _set_fields(options).items() if name in _RESNET_ARGUMENTS},
    )
    if options.weights:
        _load_weights(backbone, options.weights)
    return backbone


def _load_weights(backbone: ResNet, path: str) -> None:
    missing, unexpected = load_backbone_weights(backbone, path)
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
