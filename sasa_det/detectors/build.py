"""``build_detector``: the one place that turns detector options into a torchvision detection model."""

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNN
from torchvision.models.detection.retinanet import RetinaNet

from sasa_det.detectors.anchors import retinanet_anchors, rpn_anchors
from sasa_det.detectors.attention_input_norm import with_input_norm
from sasa_det.detectors.class_agnostic_nms import apply_class_agnostic_nms
from sasa_det.detectors.options import ARCHS, BACKBONE_FEATURES, SIZE_DIVISIBLE, DetectorOptions, known_arch
from sasa_det.detectors.rcnn import RoiHeadWidths, rcnn_from_backbone
from sasa_det.detectors.retinanet import retinanet_from_backbone
from sasa_det.layers import SasaOptions

__all__ = ["ARCHS", "BACKBONE_FEATURES", "SIZE_DIVISIBLE", "DetectorOptions", "build_detector"]  # options re-exported

_TORCHVISION_CLASS = {"retinanet": RetinaNet, "faster_rcnn": FasterRCNN, "mask_rcnn": MaskRCNN}
# Arguments the builder sets itself: they cannot come through detector_kwargs.
_BUILDER_ARGS = {
    "backbone",
    "num_classes",
    "min_size",
    "max_size",
    "head",
    "box_roi_pool",
    "mask_roi_pool",
    "anchor_generator",
    "rpn_anchor_generator",
    "box_head",
    "box_predictor",
    "mask_head",
    "mask_predictor",
}
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


def _positive_int(key: str, value: Any) -> int:
    """``value`` of ``model.<key>`` if it is a positive int, else an error naming the key."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model.{key} must be a positive int, got {value!r}")
    return value


def _check_sizes(min_size: int | Sequence[int], max_size: int) -> tuple[int, ...]:
    """``min_size`` as a non-empty tuple of positive ints; ``max_size`` must be a positive int."""
    sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(f"min_size must be a positive int or a non-empty list of them, got {min_size!r}")
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size <= 0:
        raise ValueError(f"max_size must be a positive int, got {max_size!r}")
    return sizes


def build_detector(
    options: DetectorOptions, num_classes: int, backbone: nn.Module, sasa: SasaOptions | None = None
) -> nn.Module:
    """A torchvision RetinaNet / Faster R-CNN / Mask R-CNN over a built backbone.

    Args:
        options: the architecture (``"retinanet"`` on P3–P7, ``"faster_rcnn"`` or ``"mask_rcnn"`` on P2–P6), the
            pyramid (``fpn``: ``"conv"`` or ``"attention"``, 3×3 convs → SASA layers) and the heads (``head``,
            ``head_norm``: RetinaNet only; ``None`` = the head's default, none for the conv head as torchvision's
            v1, group for attention), their width ``fpn_channels``, the EVAL resize (``min_size``, ``max_size``:
            training images are not resized by the model, ``_skip_resize=True``, the data pipeline has resized
            them) and ``detector_kwargs``, extra keyword arguments of the torchvision class (``score_thresh``,
            ``nms_thresh``, ``detections_per_img``, ``topk_candidates``, ``fg_iou_thresh``, ``rpn_*``, ``box_*``,
            ...; for the R-CNNs ``score_thresh`` / ``nms_thresh`` / ``detections_per_img`` mean ``box_score_thresh``
            / ``box_nms_thresh`` / ``box_detections_per_img``); ``class_agnostic_nms`` adds an NMS across
            classes after the per-class one (:mod:`sasa_det.detectors.class_agnostic_nms`); ``anchor_sizes``
            the anchors' base size per level (:mod:`sasa_det.detectors.anchors`); ``box_head_fc_dim`` /
            ``mask_head_conv_dim`` the R-CNNs' RoI head widths.
        num_classes: number of FOREGROUND classes ``K``; labels are 1..K and the model has ``K + 1`` classes
            (index 0 is background / never a target, torchvision's convention).
        backbone: the feature extractor, returning exactly ``options.backbone_features()`` with an
            ``out_channels`` dict (:func:`sasa_det.backbones.build_backbone` with ``out_features=`` those, and
            ``image_size=options.backbone_image_size()`` when it has AA layers).
        sasa: how the attention pyramid's and heads' SASA layers attend (default: the paper's values).

    Returns the torchvision model: train mode ``model(images, targets) -> dict of losses``; eval mode
    ``model(images) -> list of {"boxes" [D, 4] xyxy, "scores" [D], "labels" [D] (1..K)[, "masks" [D, 1, H, W]]}``
    in the input images' coordinates. ``images`` is a list of ``[3, H, W]`` tensors in 0..1.
    """
    arch = known_arch(options.arch)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be the number of foreground classes (an int >= 1), got {num_classes!r}")
    if options.head == "attention" and arch != "retinanet":
        raise ValueError(f"head='attention' exists for arch='retinanet' only, got arch={arch!r}; use head='conv'")
    if options.head_norm is not None and arch != "retinanet":
        raise ValueError(f"head_norm exists for arch='retinanet' only, got arch={arch!r}; leave it null")
    channels = _positive_int("fpn_channels", options.fpn_channels)
    roi_head_widths = RoiHeadWidths(
        _positive_int("box_head_fc_dim", options.box_head_fc_dim),
        _positive_int("mask_head_conv_dim", options.mask_head_conv_dim),
    )
    kwargs = _check_detector_kwargs(arch, options.detector_kwargs)
    kwargs.setdefault("_skip_resize", True)
    kwargs.update(min_size=_check_sizes(options.min_size, options.max_size), max_size=options.max_size)
    attention_layer = with_input_norm((sasa or SasaOptions()).factory(), options.attention_norm)
    if arch == "retinanet":
        model = retinanet_from_backbone(
            backbone,
            num_classes + 1,
            options.fpn,
            options.head,
            channels,
            options.head_norm,
            attention_layer,
            options.head_value_init_std,
            anchor_generator=retinanet_anchors(options.anchor_sizes),
            **kwargs,
        )
    else:
        model = rcnn_from_backbone(
            backbone,
            num_classes + 1,
            options.predicts_masks(),
            options.fpn,
            channels,
            attention_layer,
            roi_head_widths,
            rpn_anchor_generator=rpn_anchors(options.anchor_sizes),
            **kwargs,
        )
    return apply_class_agnostic_nms(model) if options.class_agnostic_nms else model
