"""Parameters and FLOPs of the model an experiment config builds (``tools/model_info.py CONFIG``).

The config is loaded as training loads it (``_base_`` files, ``key=value`` overrides, validation) and its task
builds the model with fresh weights (``backbone.weights`` is not read: weights do not change the counts). FLOPs
follow :mod:`sasa_det.analysis.model_info`: a detector's dense part (backbone, pyramid, dense heads; see
:mod:`sasa_det.analysis.detector_complexity`) on one square image of the evaluation resize's size, a classifier
whole on one ``classifier.image_size`` image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from sasa_det.analysis.detector_complexity import dense_detector_part
from sasa_det.analysis.model_info import ModelInfo, count_flops, count_parameters

__all__ = ["UNSET_CLASSES", "measure_config"]

#: Classes measured with when the config leaves ``num_classes`` to the training data.
UNSET_CLASSES = 1


def measure_config(
    config: str | os.PathLike, overrides: Sequence[str] = (), image_size: Optional[int] = None
) -> tuple[ModelInfo, list[str]]:
    """``(info, notes)`` for the model ``config`` (with ``overrides``) builds, on one ``image_size``² image
    (default: a detector's evaluation size ``min(model.min_size, model.max_size)``, a classifier's
    ``classifier.image_size``). ``notes`` says what was assumed (a ``num_classes`` left to the data).

    Raises ConfigError (a bad config or override) and FileNotFoundError (no such config).
    """
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.tasks import get_task

    cfg = load_config(config, list(overrides))
    task = get_task(cfg.task)
    section = task.model_section
    cfg = cfg.copy()
    OmegaConf.update(cfg, f"{section}.backbone.weights", None)
    notes = []
    if cfg[section].num_classes is None:
        OmegaConf.update(cfg, f"{section}.num_classes", UNSET_CLASSES)
        notes.append(
            f"{section}.num_classes is null (taken from the training data when training): measured with "
            f"{UNSET_CLASSES} class; give {section}.num_classes=K to measure with K"
        )
    model = task.network(task.build_module(cfg))[0].eval()
    classes = f"{cfg[section].num_classes} class{'es' if cfg[section].num_classes != 1 else ''}"
    if cfg.task == "detection":
        size = image_size or min(int(cfg.model.min_size), int(cfg.model.max_size))
        flops = count_flops(dense_detector_part(model), torch.zeros(1, 3, size, size))
        name = f"{Path(config).stem} ({cfg.model.arch}, {classes})"
    else:
        size = image_size or int(cfg.classifier.image_size)
        flops = count_flops(model, torch.zeros(1, 3, size, size))
        name = f"{Path(config).stem} (classifier, {classes})"
    return ModelInfo(name, count_parameters(model), flops, size), notes
