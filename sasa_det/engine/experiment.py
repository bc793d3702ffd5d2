"""The experiment schema: one dataclass per task, composed of the option dataclasses of the code that consumes
them, and the config loader (:mod:`sasa_det.config`) bound to it.

| section | declared by |
| --- | --- |
| ``task``, ``output_dir`` | :class:`Experiment` (here) |
| ``optim`` | :class:`~sasa_det.optim.OptimSettings` |
| ``trainer`` | :class:`~sasa_det.engine.trainer.TrainerOptions` (its run options: :class:`~sasa_det.engine.run.options.RunOptions`) |
| ``logging`` | :class:`~sasa_det.experiment_loggers.LoggingOptions` |
| detection ``model`` / ``data`` | :mod:`sasa_det.engine.tasks.detection_options` |
| detection ``eval`` | :class:`~sasa_det.evaluation.EvalOptions` |
| classification ``classifier`` / ``data`` | :class:`~sasa_det.engine.tasks.classification_options.ClassifierOptions`, :class:`~sasa_det.data.ImageFolderDataOptions` |

The ``task`` key selects the schema, so ``data`` is typed per task: a detection key in a classification
config is an error naming the key. Each section validates its own ranges (its ``validate()``); the rules
that span sections belong to the task (:func:`~sasa_det.engine.tasks.detection_options.check_detection_experiment`).

This module imports neither torch nor Lightning: a config is read and checked before anything heavy loads.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

import sasa_det.config as generic
from sasa_det.choices import choice
from sasa_det.config import ConfigError
from sasa_det.data.loading.options import ImageFolderDataOptions
from sasa_det.engine.tasks.classification_options import ClassifierOptions
from sasa_det.engine.tasks.detection_options import (
    DetectionDataOptions,
    DetectionModelOptions,
    check_detection_experiment,
)
from sasa_det.engine.trainer import TrainerOptions
from sasa_det.evaluation.options import EvalOptions
from sasa_det.experiment_loggers import LoggingOptions
from sasa_det.optim.settings import OptimSettings

__all__ = [
    "SCHEMAS",
    "ClassificationExperiment",
    "DetectionExperiment",
    "Experiment",
    "config_from_dict",
    "checkpoint_config",
    "experiment_schema",
    "load_config",
    "model_section",
    "without_initial_weights",
]

logger = logging.getLogger(__name__)

#: ``task`` values (each has a schema below and a task in :mod:`sasa_det.engine.tasks`).
TASK_NAMES = ("detection", "classification")


@dataclass
class Experiment:
    """What every experiment has: its task, where it writes, how it optimises, trains and logs."""

    #: "detection" | "classification"
    task: str = choice(TASK_NAMES, default="detection")
    #: the run directory: checkpoints, logs, resolved config, evaluation results
    output_dir: str = "outputs/run"
    #: optimizer and schedule
    optim: OptimSettings = field(default_factory=OptimSettings)
    #: Lightning trainer and the run's checkpoints, resuming, moving average
    trainer: TrainerOptions = field(default_factory=TrainerOptions)
    #: experiment trackers
    logging: LoggingOptions = field(default_factory=LoggingOptions)


@dataclass
class DetectionExperiment(Experiment):
    """``task: detection``: a RetinaNet / Faster R-CNN / Mask R-CNN on COCO-format data."""

    #: detection model
    model: DetectionModelOptions = field(default_factory=DetectionModelOptions)
    #: COCO-format data or the synthetic shapes set
    data: DetectionDataOptions = field(default_factory=DetectionDataOptions)
    #: evaluation
    eval: EvalOptions = field(default_factory=EvalOptions)

    def validate(self) -> None:
        """The rules that span sections of a detection config."""
        check_detection_experiment(self.model, self.eval, self.trainer)


@dataclass
class ClassificationExperiment(Experiment):
    """``task: classification``: an image classifier on ImageFolder trees (backbone pre-training)."""

    #: classification model
    classifier: ClassifierOptions = field(default_factory=ClassifierOptions)
    #: ImageFolder trees and loaders
    data: ImageFolderDataOptions = field(default_factory=ImageFolderDataOptions)


#: ``task`` -> its experiment schema.
SCHEMAS: dict[str, type[Experiment]] = {"detection": DetectionExperiment, "classification": ClassificationExperiment}


def experiment_schema(raw: Any) -> type[Experiment]:
    """The schema the raw config's ``task`` selects (``detection`` when unset).

    Raises:
        ConfigError: an unknown task, with the closest one.
    """
    task = raw.get("task", None) if hasattr(raw, "get") else None
    task = "detection" if task is None else task
    if task not in SCHEMAS:
        hint = difflib.get_close_matches(str(task), list(SCHEMAS), n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"task={task!r} is not one of {list(SCHEMAS)}{suggestion}")
    return SCHEMAS[task]


def model_section(cfg: DictConfig) -> str:
    """The section holding the network: ``model`` (detection) or ``classifier``."""
    return "classifier" if cfg.task == "classification" else "model"


def load_config(path: Optional[str | os.PathLike] = None, overrides: Optional[list[str]] = None) -> DictConfig:
    """Load an experiment config: its task's schema defaults <- ``_base_`` chain <- file <- ``overrides``.

    Raises:
        ConfigError: unknown key / wrong type / bad value, naming the key and the file or override.
        FileNotFoundError: the file or one of its bases does not exist.
    """
    try:
        return generic.load_config(path, overrides, schema=experiment_schema)
    except ConfigError as err:
        raise ConfigError(_with_task_hint(str(err))) from None


def _with_task_hint(message: str) -> str:
    """``message`` with, for an unknown key that another task's schema knows, the task it belongs to."""
    match = re.search(r"unknown config key '([^']+)'", message)
    if match is None:
        return message
    key = match.group(1)
    for task, schema in SCHEMAS.items():
        if OmegaConf.select(OmegaConf.structured(schema), key, default=_MISSING) is not _MISSING:
            return f"{message} ({key} is a key of task: {task} configs; is task set right?)"
    return message


_MISSING = object()


def _defaults(schema: type) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(schema), resolve=True)


def _drop_other_tasks_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Configs stored before the schema was typed per task hold every task's sections (``classifier`` in a
    detection run, ``model``/``eval`` and the COCO ``data`` keys in a classification run). Those keys had no
    effect: they are dropped, with a warning when one was set to something else than its default."""
    schema = experiment_schema(data)
    own, defaults = _defaults(schema), {}
    for other in SCHEMAS.values():
        if other is not schema:
            defaults.update(_defaults(other))
    kept = {key: value for key, value in data.items() if key in own}
    dropped = {key: value for key, value in data.items() if key not in own}
    if isinstance(data.get("data"), dict):
        kept["data"] = {k: v for k, v in data["data"].items() if k in own["data"]}
        dropped["data"] = {k: v for k, v in data["data"].items() if k not in own["data"]}
    changed = _set_leaves(dropped, defaults)
    if changed:
        logger.warning(
            "the stored config sets keys a %s run does not read (%s); they had no effect and are left out",
            schema.__name__.removesuffix("Experiment").lower(),
            ", ".join(sorted(changed)),
        )
    return kept


def _set_leaves(value: Any, default: Any, prefix: str = "") -> list[str]:
    """Keys of the leaves of ``value`` that are set (not null) to something else than in ``default``."""
    if isinstance(value, dict):
        default = default if isinstance(default, dict) else {}
        return [key for k, v in value.items() for key in _set_leaves(v, default.get(k), f"{prefix}{k}.")]
    return [] if value is None or value == default else [prefix[:-1]]


def config_from_dict(data: dict[str, Any], overrides: Optional[list[str]] = None) -> DictConfig:
    """Rebuild an experiment config from a stored one (a checkpoint's, a run's ``config.yaml``), then apply
    ``overrides``."""
    return generic.config_from_dict(_drop_other_tasks_keys(dict(data)), overrides, schema=experiment_schema)


def checkpoint_config(path: str | os.PathLike, overrides: Optional[list[str]] = None) -> tuple[DictConfig, dict]:
    """The experiment config stored in a checkpoint (with ``overrides``), and the checkpoint.

    Raises:
        CheckpointFileError: unreadable file. ValueError: no config inside (not written by ``tools/train.py``).
    """
    from sasa_det.engine.run.resume import read_stored_config

    stored, checkpoint = read_stored_config(path)
    return config_from_dict(stored, list(overrides or [])), checkpoint


def without_initial_weights(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` that forgets where the initial weights came from (``init_from``, backbone ``weights``):
    a checkpoint or a resumed run holds all the weights already."""
    cfg = copy.deepcopy(cfg)
    section = model_section(cfg)
    cfg[section].init_from = None
    cfg[section].backbone.weights = None
    return cfg
