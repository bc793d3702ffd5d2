"""A trained LightningModule rebuilt from its checkpoint: the stored config, the task's builder, the weights."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import pytorch_lightning as pl
from omegaconf import DictConfig

from sasa_det.engine.experiment import checkpoint_config, without_initial_weights
from sasa_det.engine.tasks import get_task

__all__ = ["load_module"]


def load_module(
    ckpt_path: str | os.PathLike, overrides: Optional[Sequence[str]] = None
) -> tuple[pl.LightningModule, DictConfig]:
    """Rebuild the LightningModule of a checkpoint (its stored config + ``overrides``) with its weights.

    Returns ``(module, cfg)``; ``cfg`` has the initial-weight keys cleared (the checkpoint holds all weights).
    """
    cfg, checkpoint = checkpoint_config(ckpt_path, list(overrides or []))
    cfg = without_initial_weights(cfg)
    task = get_task(cfg.task)
    class_names = (checkpoint.get("hyper_parameters") or {}).get("class_names")
    module = task.build_module(cfg, class_names)
    module.load_state_dict(checkpoint["state_dict"])
    return module, cfg
