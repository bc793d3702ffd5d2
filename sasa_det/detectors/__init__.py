"""Detectors: torchvision's RetinaNet / Faster R-CNN / Mask R-CNN over our backbones, and the SASA attention
pyramid and heads. :func:`build_detector` is the entry point."""

from sasa_det.detectors.attention_fpn import AttentionFeaturePyramidNetwork, AttentionLastLevelP6P7
from sasa_det.detectors.attention_retinanet_head import (
    AttentionRetinaNetClassificationHead,
    AttentionRetinaNetHead,
    AttentionRetinaNetRegressionHead,
)
from sasa_det.detectors.backbone_with_fpn import BackboneWithFPN, backbone_with_fpn, build_fpn
from sasa_det.detectors.build import ARCHS, BACKBONE_FEATURES, DetectorOptions, build_detector
from sasa_det.detectors.rcnn import rcnn_from_backbone
from sasa_det.detectors.retinanet import ForegroundRetinaNet, retinanet_from_backbone

__all__ = [
    "ARCHS",
    "BACKBONE_FEATURES",
    "AttentionFeaturePyramidNetwork",
    "AttentionLastLevelP6P7",
    "AttentionRetinaNetClassificationHead",
    "AttentionRetinaNetHead",
    "AttentionRetinaNetRegressionHead",
    "BackboneWithFPN",
    "DetectorOptions",
    "ForegroundRetinaNet",
    "backbone_with_fpn",
    "build_detector",
    "build_fpn",
    "rcnn_from_backbone",
    "retinanet_from_backbone",
]
