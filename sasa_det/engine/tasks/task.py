"""What differs between the engine's tasks, behind one interface (:mod:`sasa_det.engine.tasks` names them).

A :class:`Task` owns everything of a task that ``train`` / ``evaluate`` / ``predict`` need: the data module
and LightningModule builders (the only code that reads those config sections), the data paths its config
names, the metric the best checkpoint keeps, the task's extra callbacks, the files written at the end of a
run or an evaluation (through the run directory).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from omegaconf import DictConfig

from sasa_det.config import ConfigError
from sasa_det.engine.run.run_directory import RunDirectory

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["DataPath", "Task", "check_data_paths"]

#: A data path a config may set: (key under ``data``, "file" | "folder", the split, what it should hold).
DataPath = tuple[str, str, str, str]


def check_data_paths(cfg: DictConfig, paths: tuple[DataPath, ...], splits: tuple[str, ...] = ("train", "val")) -> None:
    """Every data path of ``paths`` that the config sets for ``splits`` exists and is a file or folder as it must be.

    Run before anything is written. Paths filled later (from ``data.shapes.root``) are not set yet and not checked.

    Raises:
        ConfigError: one line per bad key, naming the key, the value (and the folder a relative value was
            taken from) and what it should point at.
    """
    problems = []
    for key, kind, split, meaning in paths:
        value = cfg.data.get(key)
        if value is None or split not in splits:
            continue
        path = Path(str(value)).expanduser()
        where = "" if path.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        if not path.exists():
            problems.append(f"data.{key}={str(value)!r}: no such {kind}{where}; set it to {meaning}")
        elif kind == "file" and not path.is_file():
            problems.append(f"data.{key}={str(value)!r} is a folder; set it to {meaning}")
        elif kind == "folder" and not path.is_dir():
            problems.append(f"data.{key}={str(value)!r} is a file; set it to {meaning}")
    if problems:
        raise ConfigError("data paths of the config are wrong (nothing was written):\n  " + "\n  ".join(problems))


class Task(ABC):
    """One task of the engine (detection, classification)."""

    #: Config value of ``task``.
    name: str
    #: Validation metric the best checkpoint maximises.
    monitor: str
    #: Config section holding the model (``"model"`` or ``"classifier"``).
    model_section: str
    #: The data paths its ``data`` section may set.
    data_paths: tuple[DataPath, ...] = ()

    def check_data_paths(self, cfg: DictConfig, splits: tuple[str, ...] = ("train", "val")) -> None:
        """:func:`check_data_paths` of this task's data paths."""
        check_data_paths(cfg, self.data_paths, splits)

    def prepare(self, cfg: DictConfig) -> DictConfig:
        """Resolve data paths (e.g. generate a synthetic dataset); returns a new config. Every rank calls it."""
        return cfg

    @abstractmethod
    def build_datamodule(
        self, cfg: DictConfig, train: bool = True, run_dir: Optional[RunDirectory] = None
    ) -> pl.LightningDataModule:
        """The data module; ``train=False`` needs the validation split only; reports go into ``run_dir``."""

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

    def callbacks(self, cfg: DictConfig, title: Optional[str] = None) -> list[pl.Callback]:
        """Task-specific callbacks added to every training run and evaluation (``title``: what an evaluation
        evaluates, e.g. a checkpoint's name, epoch and step, for what they print)."""
        return []

    def write_report(
        self,
        module: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        metrics: dict[str, float],
        cfg: DictConfig,
        run_dir: RunDirectory,
    ) -> dict[str, Optional[str]]:
        """Files written into ``run_dir`` (global rank 0) after training; returns ``{name: path}`` of what was written."""
        return {}

    def write_evaluation(self, module: pl.LightningModule, out: RunDirectory, cfg: DictConfig) -> None:
        """Files written into ``out`` (global rank 0) after ``evaluate``, besides ``metrics.json``; ``cfg`` the
        evaluated config."""

    def use_test_time_augmentation(self, module: pl.LightningModule, cfg: DictConfig) -> bool:
        """Switch ``module`` to the test-time augmentation ``cfg`` asks for; False when it asks for none."""
        return False

    def attach_evaluation_data(self, module: pl.LightningModule, datamodule: pl.LightningDataModule) -> None:
        """Give the module what validation needs outside a training run (e.g. the COCO ground truth)."""
