"""The detector's options (``model.*`` beside the backbone) and the names they choose from, without torch: a
config is read and checked before any model module is imported."""

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from sasa_det.choices import choice

__all__ = [
    "ARCHS",
    "ATTENTION_NORMS",
    "BACKBONE_FEATURES",
    "FPN_KINDS",
    "HEAD_KINDS",
    "HEAD_NORMS",
    "RCNN_FEATURES",
    "RETINANET_FEATURES",
    "SIZE_DIVISIBLE",
    "DetectorOptions",
    "known_arch",
]

ARCHS = ("retinanet", "faster_rcnn", "mask_rcnn")
#: "conv": torchvision's FPN; "attention": the SASA paper's attention FPN
FPN_KINDS = ("conv", "attention")
#: "conv": torchvision's RetinaNet heads; "attention": the SASA paper's attention heads
HEAD_KINDS = ("conv", "attention")
#: normalisation in the RetinaNet head towers
HEAD_NORMS = ("group", "none")
#: normalisation of each attention layer's input in the attention pyramid and heads (see attention_input_norm)
ATTENTION_NORMS = ("none", "layer")
RETINANET_FEATURES = ("C3", "C4", "C5")  # RetinaNet skips P2 (too many anchors); P6, P7 are extra levels
RCNN_FEATURES = ("C2", "C3", "C4", "C5")
#: The backbone features each architecture's pyramid reads.
BACKBONE_FEATURES = {"retinanet": RETINANET_FEATURES, "faster_rcnn": RCNN_FEATURES, "mask_rcnn": RCNN_FEATURES}
SIZE_DIVISIBLE = 32  # torchvision's GeneralizedRCNNTransform pads batches to a multiple of 32


def known_arch(arch: str) -> str:
    """``arch`` if it names an architecture, else an error listing them."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    return arch


@dataclass
class DetectorOptions:
    """What :func:`build_detector` puts on a backbone: the detection part of a model's config (``model.*``)."""

    #: "retinanet" | "faster_rcnn" | "mask_rcnn"
    arch: str = choice(ARCHS, default="retinanet")
    #: "conv" (torchvision FPN) | "attention" (SASA paper's attention FPN)
    fpn: str = choice(FPN_KINDS, default="conv")
    #: "conv" (torchvision heads) | "attention" (SASA paper's attention heads; RetinaNet)
    head: str = choice(HEAD_KINDS, default="conv")
    #: FPN width (SASA paper Sec. 4.2: d = 256)
    fpn_channels: int = 256
    #: RetinaNet heads: "none" | "group" (GroupNorm); null = conv head none, attention head group
    head_norm: Optional[str] = choice(HEAD_NORMS, default=None)
    #: evaluation resize: shorter side (torchvision GeneralizedRCNNTransform)
    min_size: int = 800
    #: evaluation resize: longest side cap
    max_size: int = 1333
    #: passed to the torchvision detector (e.g. detections_per_img)
    detector_kwargs: dict[str, Any] = field(default_factory=dict)
    #: NMS across classes after the per-class NMS: one box per object when classes exclude each other
    class_agnostic_nms: bool = False
    #: attention pyramid and heads: "layer" normalises each attention layer's input (LayerNorm over channels);
    #: "none" feeds it as is (the paper is silent; un-normalised inputs saturate the softmax, see docs/zoo.md)
    attention_norm: str = choice(ATTENTION_NORMS, default="layer")
    #: attention heads: std of the value projections' init (SASA paper Sec. 4.2: N(0, 0.01))
    head_value_init_std: float = 0.01
    #: base anchor size in pixels per pyramid level (RetinaNet P3-P7, 3 octave scales each; R-CNN RPN P2-P6);
    #: null = torchvision's [32, 64, 128, 256, 512], sized for 800-px COCO images
    anchor_sizes: Optional[list[int]] = None
    #: Faster / Mask R-CNN: width of the box head's two fully connected layers (torchvision: 1024)
    box_head_fc_dim: int = 1024
    #: Mask R-CNN: channels of the mask head's four 3x3 convs and its upsampling layer (torchvision: 256)
    mask_head_conv_dim: int = 256

    #: keys added after configs were stored -> the value a stored config without them trained with
    added_keys: ClassVar[dict[str, Any]] = {"attention_norm": "none"}

    def predicts_masks(self) -> bool:
        """Whether the detector predicts instance masks (and trains on them): Mask R-CNN."""
        return self.arch == "mask_rcnn"

    def backbone_features(self) -> tuple[str, ...]:
        """The features the backbone must return for this architecture (``out_features``)."""
        return BACKBONE_FEATURES[known_arch(self.arch)]

    def backbone_image_size(self) -> int:
        """The largest input side the backbone sees: ``max_size`` rounded up to the batch padding (32), what
        AA relative tables are sized for."""
        return math.ceil(self.max_size / SIZE_DIVISIBLE) * SIZE_DIVISIBLE
