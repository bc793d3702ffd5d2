"""The experiment trackers of a training run, by config (``logging.loggers``): Lightning's own loggers, writing
where the run directory says.

* ``csv`` -- ``logs/version_0/metrics.csv`` and ``hparams.yaml`` (always on: the plots and resuming read it).
* ``tensorboard`` -- ``tensorboard/version_0/`` events.
* ``wandb`` -- Weights & Biases (the ``wandb`` extra); ``logging.offline: true`` keeps the run under
  ``output_dir/wandb/`` with no network, to upload later with ``wandb sync``.
* ``mlflow`` -- MLflow (the ``mlflow`` extra); by default a local SQLite store ``output_dir/mlflow.db`` (no
  server, no network; ``mlflow ui --backend-store-uri sqlite:///.../mlflow.db`` shows it), or
  ``logging.mlflow_tracking_uri``.

Every logger receives the resolved config as hyper-parameters (nested keys flattened to ``model/backbone/name``
style by the loggers that need flat ones) and, after training, the final validation metrics
(:func:`log_final_metrics`: ``final/bbox/AP`` ...). The options are :class:`sasa_det.experiment_loggers.LoggingOptions`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional

from sasa_det.engine.run.run_directory import RunDirectory
from sasa_det.experiment_loggers import LoggingOptions
from sasa_det.optional_extra import require_extra

if TYPE_CHECKING:
    from pytorch_lightning.loggers import Logger

__all__ = ["build_loggers", "check_trackers", "log_final_metrics", "log_resolved_config"]

logger = logging.getLogger(__name__)


def _wandb_has_credentials() -> bool:
    """Whether Weights & Biases can log in without asking: an API key in ``WANDB_API_KEY`` or in the netrc
    file ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return True
    import netrc

    try:
        entries = netrc.netrc(os.environ.get("NETRC") or None).hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    return host in entries


def check_trackers(options: LoggingOptions) -> LoggingOptions:
    """The options a run logs with, checked before anything of the run is written: the extras the trackers
    need are installed (else MissingExtra), and wandb without credentials logs offline (one warning line
    saying how to upload later) instead of stopping mid-setup."""
    for name, extra in (("wandb", "wandb"), ("mlflow", "mlflow")):
        if name in options.loggers:
            require_extra(extra, extra, f"logging.loggers: [{name}]")
    if "wandb" in options.loggers and not options.offline and not _wandb_has_credentials():
        logger.warning(
            "logging.loggers has wandb but no W&B API key is set (WANDB_API_KEY or `wandb login`): logging offline "
            "into the run's wandb/ folder; upload it later with `wandb sync`"
        )
        return replace(options, offline=True)
    return options


def build_loggers(options: LoggingOptions, run_dir: RunDirectory, resume_step: Optional[int] = None) -> list[Logger]:
    """The loggers ``options.loggers`` names, writing into the run directory, in that order (``resume_step``:
    the global step a resumed run continues from; TensorBoard hides the events logged from there on by
    the lost part of the run, which is trained and logged again).

    Raises MissingExtra naming the extra to install for wandb / mlflow, before any run starts.
    """
    from pytorch_lightning.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

    output_dir = run_dir.root
    run_name = options.run_name or output_dir.resolve().name
    loggers: list[Logger] = []
    for name in options.loggers:
        if name == "csv":
            # version 0: a run directory holds one run, and a resumed run appends to its own logs
            csv_name, version = run_dir.CSV_LOGS
            loggers.append(CSVLogger(save_dir=str(output_dir), name=csv_name, version=version))
        elif name == "tensorboard":
            loggers.append(
                TensorBoardLogger(
                    save_dir=str(output_dir),
                    name=run_dir.TENSORBOARD_LOGS[0],
                    version=run_dir.TENSORBOARD_LOGS[1],
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
            uri = options.mlflow_tracking_uri or f"sqlite:///{run_dir.mlflow_store.resolve()}"
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
