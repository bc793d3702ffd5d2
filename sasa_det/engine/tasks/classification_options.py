"""The section of a classification experiment that the classification task owns: ``classifier``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sasa_det.backbones.options import ResNetOptions
from sasa_det.layers import SasaOptions

__all__ = ["ClassifierOptions"]


@dataclass
class ClassifierOptions:
    """Image classifier for ``task: classification`` (backbone pre-training / fine-tuning): the ``classifier``
    section."""

    #: backbone preset and options
    backbone: ResNetOptions = field(default_factory=ResNetOptions)
    #: every SASA layer of the backbone
    sasa: SasaOptions = field(default_factory=SasaOptions)
    #: null = number of class folders in data.train_dir
    num_classes: Optional[int] = None
    #: weights to start from (no optimizer state); a new class count re-initialises the head
    init_from: Optional[str] = None
    #: training crop / evaluation size in pixels
    image_size: int = 224
    #: cross-entropy label smoothing (0 = off)
    label_smoothing: float = 0.0
    #: dropout before the linear head
    dropout: float = 0.0
