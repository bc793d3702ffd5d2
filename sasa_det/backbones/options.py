"""A backbone's options and the named presets of both papers (plain data, no torch).

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

:class:`ResNetOptions` declares every option of a backbone (the ``backbone`` section of a model's config);
:func:`sasa_det.backbones.presets.backbone_from_options` turns them into a network. What a stage, the stem
and the norms can be is named by :mod:`sasa_det.backbones.stage_ops`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from sasa_det.backbones.stage_ops import NORM_LAYERS, STAGE_OPS, STEMS
from sasa_det.choices import OptionError, choice

__all__ = [
    "PRESETS",
    "AAOptions",
    "AttentionStemOptions",
    "ResNetOptions",
    "check_stage_options",
    "list_backbones",
]

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


def list_backbones() -> list[str]:
    """Names of the backbone presets, e.g. ``["resnet26", ..., "aa_resnet152"]``."""
    return list(PRESETS)


def check_stage_options(stage_ops: Sequence | None, frozen_stages: int | None) -> None:
    """One operation per stage (4) and ``frozen_stages`` in 0..4 (0 = nothing frozen); ``None`` passes.

    Raises:
        OptionError: naming the option (``{key}`` in its message stands for the option's config key).
    """
    if stage_ops is not None and len(stage_ops) != 4:
        raise OptionError("stage_ops", f"{{key}} needs one operation per stage (4), got {list(stage_ops)}")
    if frozen_stages is not None and not 0 <= int(frozen_stages) <= 4:
        raise OptionError("frozen_stages", f"{{key}} must be in 0..4 (0 = nothing frozen), got {frozen_stages}")


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
        """The stage rules :class:`ResNet` applies (:func:`check_stage_options`)."""
        check_stage_options(self.stage_ops, self.frozen_stages)
