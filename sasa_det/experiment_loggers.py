"""The experiment trackers of a training run, by config (``logging.loggers``): Lightning's own loggers.

* ``csv`` -- ``logs/version_0/metrics.csv`` and ``hparams.yaml`` (always on: the plots and resuming read it).
* ``tensorboard`` -- ``tensorboard/version_0/`` events.
* ``wandb`` -- Weights & Biases (the ``wandb`` extra); ``logging.offline: true`` keeps the run under
  ``output_dir/wandb/`` with no network, to upload later with ``wandb sync``.
* ``mlflow`` -- MLflow (the ``mlflow`` extra); by default a local SQLite store ``output_dir/mlflow.db`` (no
  server, no network; ``mlflow ui --backend-store-uri sqlite:///.../mlflow.db`` shows it), or
  ``logging.mlflow_tracking_uri``.

Every logger receives the resolved config as hyper-parameters (nested keys flattened to ``model/backbone/name``
style by the loggers that need flat ones) and, after training, the final validation metrics
(:func:`log_final_metrics`: ``final/bbox/AP`` ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sasa_det.choices import choice
from sasa_det.optional_extra import require_extra

if TYPE_CHECKING:  # Lightning is imported where the loggers are built, not with the config schema
    from pytorch_lightning.loggers import Logger

__all__ = ["LOGGER_NAMES", "LoggingOptions", "build_loggers", "log_final_metrics", "log_resolved_config"]


#: experiment trackers ``logging.loggers`` may list (Lightning's loggers; wandb and mlflow are optional extras)
LOGGER_NAMES = ("csv", "tensorboard", "wandb", "mlflow")


@dataclass
class LoggingOptions:
    """Where a training run logs its metrics, the resolved config (as hyper-parameters) and the final COCO table:
    the ``logging`` section of an experiment config."""

    #: trackers: "csv" (logs/version_0/metrics.csv) | "tensorboard" | "wandb" | "mlflow"
    loggers: list[str] = choice(LOGGER_NAMES, default_factory=lambda: ["csv", "tensorboard"])
    #: wandb project and mlflow experiment name
    project: str = "sasa_det"
    #: run name in wandb / mlflow; null = the output_dir's folder name
    run_name: Optional[str] = None
    #: wandb without network: the run is kept under output_dir/wandb/, to upload later with `wandb sync`
    offline: bool = False
    #: mlflow tracking URI; null = a local SQLite store, output_dir/mlflow.db (no server, no network)
    mlflow_tracking_uri: Optional[str] = None


def build_loggers(
    options: LoggingOptions, output_dir: str | os.PathLike, resume_step: Optional[int] = None
) -> list[Logger]:
    """The loggers ``options.loggers`` names, writing under ``output_dir``, in that order (``resume_step``:
    the global step a resumed run continues from; TensorBoard hides the events logged from there on by
    the lost part of the run, which is trained and logged again).

    Raises MissingExtra naming the extra to install for wandb / mlflow, before any run starts.
    """
    from pytorch_lightning.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

    output_dir = Path(output_dir)
    run_name = options.run_name or output_dir.resolve().name
    loggers: list[Logger] = []
    for name in options.loggers:
        if name == "csv":
            # version 0: a run directory holds one run, and a resumed run appends to its own logs
            loggers.append(CSVLogger(save_dir=str(output_dir), name="logs", version=0))
        elif name == "tensorboard":
            loggers.append(
                TensorBoardLogger(
                    save_dir=str(output_dir),
                    name="tensorboard",
                    version=0,
                    default_hp_metric=False,
                    **({"purge_step": resume_step} if resume_step is not None else {}),
                )
            )
        elif name == "wandb":
            require_extra("wandb", "wandb", "logging.loggers: [wandb]")
            output_dir.mkdir(parents=True, exist_ok=True)
            loggers.append(
                WandbLogger(project=options.project, name=run_name, save_dir=str(output_dir), offline=options.offline)
            )
        elif name == "mlflow":
            require_extra("mlflow", "mlflow", "logging.loggers: [mlflow]")
            uri = options.mlflow_tracking_uri or f"sqlite:///{(output_dir / 'mlflow.db').resolve()}"
            loggers.append(MLFlowLogger(experiment_name=options.project, run_name=run_name, tracking_uri=uri))
        else:
            raise ValueError(f"unknown logger {name!r}; choose from csv, tensorboard, wandb, mlflow")
    return loggers


def log_resolved_config(loggers: list[Logger], config: Mapping[str, Any]) -> None:
    """Log the resolved experiment config as every logger's hyper-parameters."""
    for experiment_logger in loggers:
        experiment_logger.log_hyperparams(dict(config))


def log_final_metrics(loggers: list[Logger], metrics: Mapping[str, float], step: int) -> None:
    """Log the final weights' validation metrics (``val/bbox/AP`` -> ``final/bbox/AP``) at ``step`` and flush."""
    final = {f"final/{name.removeprefix('val/')}": float(value) for name, value in metrics.items()}
    for experiment_logger in loggers:
        experiment_logger.log_metrics(final, step=step)
        experiment_logger.save()
