"""Backbones: the bottleneck ResNet family with per-stage convolution, SASA or AA, its presets and options."""

from sasa_det.backbones.classifier import ImageClassifier
from sasa_det.backbones.presets import (
    PRESETS,
    AAOptions,
    AttentionStemOptions,
    ResNetOptions,
    backbone_from_options,
    build_backbone,
    build_classifier,
    list_backbones,
)
from sasa_det.backbones.resnet import FEATURE_NAMES, FEATURE_STRIDES, Bottleneck, ResNet
from sasa_det.backbones.weights import load_backbone_weights

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_STRIDES",
    "PRESETS",
    "AAOptions",
    "AttentionStemOptions",
    "Bottleneck",
    "ImageClassifier",
    "ResNet",
    "ResNetOptions",
    "backbone_from_options",
    "build_backbone",
    "build_classifier",
    "list_backbones",
    "load_backbone_weights",
]
