"""``build_detector``: the one place that turns detector settings into a torchvision detection model."""

import inspect
import logging
import math
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

from torch import nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNN
from torchvision.models.detection.retinanet import RetinaNet

from sasa_det.backbones import build_backbone, load_backbone_weights
from sasa_det.detectors.backbone_with_fpn import FPN_KINDS
from sasa_det.detectors.rcnn import RCNN_FEATURES, faster_rcnn_from_backbone, mask_rcnn_from_backbone
from sasa_det.detectors.retinanet import HEAD_KINDS, RETINANET_FEATURES, retinanet_from_backbone
from sasa_det.layers import check_sasa_options

logger = logging.getLogger(__name__)

ARCHS = ("retinanet", "faster_rcnn", "mask_rcnn")
SIZE_DIVISIBLE = 32  # torchvision's GeneralizedRCNNTransform pads batches to a multiple of 32

_TORCHVISION_CLASS = {"retinanet": RetinaNet, "faster_rcnn": FasterRCNN, "mask_rcnn": MaskRCNN}
_FEATURES = {"retinanet": RETINANET_FEATURES, "faster_rcnn": RCNN_FEATURES, "mask_rcnn": RCNN_FEATURES}
# Arguments the builder sets itself: they cannot come through detector_kwargs.
_BUILDER_ARGS = {"backbone", "num_classes", "min_size", "max_size", "head", "box_roi_pool", "mask_roi_pool"}
# R-CNN names of RetinaNet's post-processing settings, so one config key works for every architecture.
_RCNN_ALIASES = {
    "score_thresh": "box_score_thresh",
    "nms_thresh": "box_nms_thresh",
    "detections_per_img": "box_detections_per_img",
}
# GeneralizedRCNNTransform options that torchvision's detectors forward through **kwargs.
_TRANSFORM_ARGS = {"size_divisible", "fixed_size", "_skip_resize"}


def _allowed_detector_kwargs(arch: str) -> set[str]:
    """Keyword arguments of torchvision's ``arch`` class that ``detector_kwargs`` may set."""
    params = inspect.signature(_TORCHVISION_CLASS[arch].__init__).parameters
    named = {name for name, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    return (named - {"self"} - _BUILDER_ARGS) | _TRANSFORM_ARGS


def _check_detector_kwargs(arch: str, detector_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Translate aliases and reject keys torchvision would not use (its transform ignores unknown keys)."""
    kwargs = dict(detector_kwargs)
    if arch != "retinanet":
        for alias, name in _RCNN_ALIASES.items():
            if alias in kwargs:
                if name in kwargs:
                    raise ValueError(f"detector_kwargs sets both {alias!r} and its R-CNN name {name!r}; keep one")
                kwargs[name] = kwargs.pop(alias)
    taken = sorted(set(kwargs) & _BUILDER_ARGS)
    if taken:
        raise ValueError(f"detector_kwargs {taken} are set by build_detector's own arguments; pass them there")
    unknown = sorted(set(kwargs) - _allowed_detector_kwargs(arch))
    if unknown:
        allowed = sorted(_allowed_detector_kwargs(arch))
        raise ValueError(f"unknown detector_kwargs {unknown} for {arch!r}; torchvision accepts {allowed}")
    return kwargs


def _check_sizes(min_size: int | Sequence[int], max_size: int) -> tuple[int, ...]:
    """``min_size`` as a non-empty tuple of positive ints; ``max_size`` must be a positive int."""
    sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(f"min_size must be a positive int or a non-empty list of them, got {min_size!r}")
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size <= 0:
        raise ValueError(f"max_size must be a positive int, got {max_size!r}")
    return sizes


def build_detector(
    arch: str,
    num_classes: int,
    backbone: str = "resnet50",
    backbone_overrides: dict[str, Any] | None = None,
    backbone_weights: str | PathLike | None = None,
    fpn: str = "conv",
    head: str = "conv",
    fpn_channels: int = 256,
    head_norm: str | None = None,
    sasa: Mapping[str, Any] | None = None,
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    detector_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A torchvision RetinaNet / Faster R-CNN / Mask R-CNN over one of our backbones.

    Args:
        arch: ``"retinanet"`` (P3–P7), ``"faster_rcnn"`` or ``"mask_rcnn"`` (P2–P6).
        num_classes: number of FOREGROUND classes ``K``; labels are 1..K and the model has ``K + 1`` classes
            (index 0 is background / never a target, torchvision's convention).
        backbone: a name from :func:`sasa_det.backbones.list_backbones`.
        backbone_overrides: keyword overrides for :func:`sasa_det.backbones.build_backbone` (``norm``,
            ``frozen_stages``, ``stage_ops``, ...). ``out_features`` is set from ``arch``; ``image_size`` defaults
            to ``max_size`` rounded up to the batch padding (32) so AA relative tables cover the largest map.
        backbone_weights: optional path of backbone weights (a classification checkpoint, a classifier or
            backbone state dict) loaded by :func:`sasa_det.backbones.load_backbone_weights`; missing and
            unexpected keys are logged.
        fpn: ``"conv"`` (torchvision's FPN) or ``"attention"`` (3×3 convs → SASA layers).
        head: ``"conv"`` or ``"attention"`` (SASA RetinaNet heads; RetinaNet only).
        fpn_channels: channels of the pyramid (and of RetinaNet's heads).
        head_norm: RetinaNet only: ``"none"`` or ``"group"`` (GroupNorm after each tower layer of the heads);
            ``None`` = the head's default (none for the conv head, as torchvision's v1; group for attention).
        sasa: options of EVERY SASA layer of the model, backbone stages, attention pyramid and attention heads
            alike (``kernel_size``, ``heads``, ``impl``, ``scaled``, ``mask_padding``); unset ones keep the
            SASA paper's values.
        min_size: shorter side the EVAL transform resizes to; a list gives torchvision's multi-scale choice (in
            eval, its last entry). Training images are not resized by the model (``_skip_resize=True``): the
            data pipeline has already resized them.
        max_size: longer-side cap of the eval resize.
        detector_kwargs: extra keyword arguments of the torchvision class (``score_thresh``, ``nms_thresh``,
            ``detections_per_img``, ``topk_candidates``, ``fg_iou_thresh``, ``rpn_*``, ``box_*``, ...). For the
            R-CNNs ``score_thresh`` / ``nms_thresh`` / ``detections_per_img`` mean ``box_score_thresh`` /
            ``box_nms_thresh`` / ``box_detections_per_img``.

    Returns the torchvision model: train mode ``model(images, targets) -> dict of losses``; eval mode
    ``model(images) -> list of {"boxes" [D, 4] xyxy, "scores" [D], "labels" [D] (1..K)[, "masks" [D, 1, H, W]]}``
    in the input images' coordinates. ``images`` is a list of ``[3, H, W]`` tensors in 0..1.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be the number of foreground classes (an int >= 1), got {num_classes!r}")
    if fpn not in FPN_KINDS:
        raise ValueError(f"unknown fpn {fpn!r}; choose one of {FPN_KINDS}")
    if head not in HEAD_KINDS:
        raise ValueError(f"unknown head {head!r}; choose one of {HEAD_KINDS}")
    if head == "attention" and arch != "retinanet":
        raise ValueError(f"head='attention' exists for arch='retinanet' only, got arch={arch!r}; use head='conv'")
    if head_norm is not None and arch != "retinanet":
        raise ValueError(f"head_norm exists for arch='retinanet' only, got arch={arch!r}; leave it null")
    if isinstance(fpn_channels, bool) or not isinstance(fpn_channels, int) or fpn_channels < 1:
        raise ValueError(f"fpn_channels must be a positive int, got {fpn_channels!r}")
    min_sizes = _check_sizes(min_size, max_size)
    kwargs = _check_detector_kwargs(arch, detector_kwargs or {})
    kwargs.setdefault("_skip_resize", True)

    sasa = check_sasa_options(sasa)
    overrides = dict(backbone_overrides or {})
    if "sasa" in overrides:
        raise ValueError(
            "give the SASA options as build_detector(sasa=...), not in backbone_overrides: they apply to every SASA layer"
        )
    overrides["sasa"] = sasa
    if "out_features" in overrides:
        raise ValueError(
            f"backbone_overrides must not set out_features ({overrides['out_features']!r}): "
            f"{arch} uses {list(_FEATURES[arch])}"
        )
    overrides["out_features"] = list(_FEATURES[arch])
    overrides.setdefault("image_size", math.ceil(max_size / SIZE_DIVISIBLE) * SIZE_DIVISIBLE)
    body = build_backbone(backbone, **overrides)
    if backbone_weights is not None:
        missing, unexpected = load_backbone_weights(body, backbone_weights)
        if missing or unexpected:
            logger.warning(
                "backbone weights %s: %d missing keys %s, %d unexpected keys %s",
                backbone_weights,
                len(missing),
                list(missing)[:10],
                len(unexpected),
                list(unexpected)[:10],
            )
        else:
            logger.info("backbone weights %s loaded: all keys matched", backbone_weights)

    size_kwargs = {"min_size": min_sizes, "max_size": max_size}
    if arch == "retinanet":
        return retinanet_from_backbone(
            body,
            num_classes + 1,
            fpn=fpn,
            head=head,
            fpn_channels=fpn_channels,
            head_norm=head_norm,
            sasa=sasa,
            **size_kwargs,
            **kwargs,
        )
    if arch == "faster_rcnn":
        return faster_rcnn_from_backbone(
            body, num_classes + 1, fpn=fpn, fpn_channels=fpn_channels, sasa=sasa, **size_kwargs, **kwargs
        )
    return mask_rcnn_from_backbone(
        body, num_classes + 1, fpn=fpn, fpn_channels=fpn_channels, sasa=sasa, **size_kwargs, **kwargs
    )
