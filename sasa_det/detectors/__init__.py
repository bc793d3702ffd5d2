"""Detectors: torchvision's RetinaNet / Faster R-CNN / Mask R-CNN over our backbones, and the SASA attention
pyramid and heads. :func:`build_detector` is the entry point; the options import without torch."""

from sasa_det.lazy_names import lazy_names

_PROVIDED_BY = {
    "attention_fpn": "AttentionFeaturePyramidNetwork AttentionLastLevelP6P7",
    "attention_retinanet_head": (
        "AttentionRetinaNetClassificationHead AttentionRetinaNetHead AttentionRetinaNetRegressionHead"
    ),
    "backbone_with_fpn": "BackboneWithFPN backbone_with_fpn build_fpn",
    "options": "ARCHS BACKBONE_FEATURES DetectorOptions",
    "build": "build_detector",
    "rcnn": "rcnn_from_backbone",
    "retinanet": "ForegroundRetinaNet retinanet_from_backbone",
}
__all__, __getattr__, __dir__ = lazy_names(__name__, globals(), _PROVIDED_BY)
