"""ImageNet-style classifier: a feature-extractor backbone, global average pooling and a linear head."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ImageClassifier"]


class ImageClassifier(nn.Module):
    """``backbone`` -> global average pool of its last feature -> ``fc`` (linear) logits.

    The backbone keeps its own parameter names under ``backbone.`` so a classifier's weights load into
    a detector's backbone (see :func:`sasa_det.backbones.load_backbone_weights`).

    Args:
        backbone: a module returning an ordered dict of features whose last entry is the deepest one,
            with an ``out_channels`` dict (e.g. :class:`~sasa_det.backbones.resnet.ResNet` with
            ``out_features=("C5",)``).
        num_classes: number of output logits.
        dropout: dropout probability before ``fc`` (0 = none; neither paper mentions one).

    Shapes: ``[N, 3, H, W] -> [N, num_classes]``. ``fc`` keeps PyTorch's default ``nn.Linear``
    initialisation (neither paper specifies one).
    """

    def __init__(self, backbone: nn.Module, num_classes: int = 1000, dropout: float = 0.0):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.feature_name = list(backbone.out_channels)[-1]
        self.num_classes = int(num_classes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(backbone.out_channels[self.feature_name], self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, 3, H, W]`` -> logits ``[N, num_classes]``."""
        feature = self.backbone(x)[self.feature_name]
        # global average pooling as a mean: AdaptiveAvgPool2d has no deterministic backward on CUDA
        return self.fc(self.dropout(feature.mean(dim=(2, 3))))
