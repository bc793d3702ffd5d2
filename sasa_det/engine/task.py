"""What differs between the engine's tasks, behind one interface (:mod:`sasa_det.engine.tasks` names them).

A :class:`Task` owns everything of a task that ``train`` / ``evaluate`` / ``predict`` need: the data module
and LightningModule builders (the only code that reads those config sections), the metric the best
checkpoint keeps, the task's extra callbacks, the files written at the end of a run or an evaluation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from omegaconf import DictConfig

__all__ = ["Task"]


class Task(ABC):
    """One task of the engine (detection, classification)."""

    #: Config value of ``task``.
    name: str
    #: Validation metric the best checkpoint maximises.
    monitor: str
    #: Config section holding the model (``"model"`` or ``"classifier"``).
    model_section: str

    def prepare(self, cfg: DictConfig) -> DictConfig:
        """Resolve data paths (e.g. generate a synthetic dataset); returns a new config. Every rank calls it."""
        return cfg

    @abstractmethod
    def build_datamodule(self, cfg: DictConfig, train: bool = True) -> pl.LightningDataModule:
        """The data module; ``train=False`` needs the validation split only."""

    def complete_config(self, cfg: DictConfig, datamodule: pl.LightningDataModule) -> DictConfig:
        """Fill ``<model section>.num_classes`` from the dataset when null; refuse a smaller one."""
        from omegaconf import OmegaConf

        key = f"{self.model_section}.num_classes"
        found = int(datamodule.num_classes)
        configured = cfg[self.model_section].num_classes
        if configured is None:
            cfg = cfg.copy()
            OmegaConf.update(cfg, key, found)
        elif configured < found:
            raise ValueError(f"{key}={configured} but the dataset has {found} classes; set {key}={found} or null")
        return cfg

    @abstractmethod
    def build_module(self, cfg: DictConfig, class_names: Optional[list[str]] = None) -> pl.LightningModule:
        """The LightningModule with freshly initialised (or ``backbone.weights``-initialised) weights."""

    @abstractmethod
    def network(self, module: pl.LightningModule) -> tuple[Any, Optional[str]]:
        """``(network, backbone key prefix)`` that ``init_from`` loads into."""

    def callbacks(self, cfg: DictConfig) -> list[pl.Callback]:
        """Task-specific callbacks added to every training run."""
        return []

    def write_report(
        self,
        module: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        metrics: dict[str, float],
        cfg: DictConfig,
        out: Path,
    ) -> dict[str, Optional[str]]:
        """Files written (global rank 0) after training; returns ``{name: path}`` of what was written."""
        return {}

    def write_evaluation(self, module: pl.LightningModule, out: Path, cfg: DictConfig) -> None:
        """Files written (global rank 0) after ``evaluate``, besides ``metrics.json``; ``cfg`` the evaluated config."""

    def use_test_time_augmentation(self, module: pl.LightningModule, cfg: DictConfig) -> bool:
        """Switch ``module`` to the test-time augmentation ``cfg`` asks for; False when it asks for none."""
        return False

    def attach_evaluation_data(self, module: pl.LightningModule, datamodule: pl.LightningDataModule) -> None:
        """Give the module what validation needs outside a training run (e.g. the COCO ground truth)."""
