"""Backbones: the bottleneck ResNet family with per-stage convolution, SASA or AA, its presets and options."""

from sasa_det.lazy_names import lazy_names

_PROVIDED_BY = {
    "resnet": "FEATURE_NAMES FEATURE_STRIDES Bottleneck ResNet",
    "options": "PRESETS AAOptions AttentionStemOptions ResNetOptions list_backbones",
    "presets": "backbone_from_options build_backbone build_classifier",
    "classifier": "ImageClassifier",
    "weights": "load_backbone_weights",
}
__all__, __getattr__, __dir__ = lazy_names(__name__, globals(), _PROVIDED_BY)
