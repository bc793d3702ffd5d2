"""Backbones: the bottleneck ResNet family with per-stage convolution, SASA or AA, its presets and options.

The names below are imported from their modules on first use, so that the options load without torch.
"""

from sasa_det.lazy_names import lazy_names

_HOME = {
    "FEATURE_NAMES": "resnet",
    "FEATURE_STRIDES": "resnet",
    "Bottleneck": "resnet",
    "ResNet": "resnet",
    "PRESETS": "options",
    "AAOptions": "options",
    "AttentionStemOptions": "options",
    "ResNetOptions": "options",
    "list_backbones": "options",
    "backbone_from_options": "presets",
    "build_backbone": "presets",
    "build_classifier": "presets",
    "ImageClassifier": "classifier",
    "load_backbone_weights": "weights",
}

__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_names(__name__, _HOME, globals())
