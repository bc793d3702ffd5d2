"""Backbones: the bottleneck ResNet family with per-stage convolution, SASA or AA, and its presets."""

from sasa_det.backbones.classifier import ImageClassifier
from sasa_det.backbones.presets import PRESETS, backbone_arguments, build_backbone, build_classifier, list_backbones
from sasa_det.backbones.resnet import FEATURE_NAMES, FEATURE_STRIDES, Bottleneck, ResNet
from sasa_det.backbones.weights import load_backbone_weights

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_STRIDES",
    "PRESETS",
    "Bottleneck",
    "ImageClassifier",
    "ResNet",
    "backbone_arguments",
    "build_backbone",
    "build_classifier",
    "list_backbones",
    "load_backbone_weights",
]
