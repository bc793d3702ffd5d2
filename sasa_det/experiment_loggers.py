"""The experiment trackers' options: the ``logging`` section of an experiment config.

The loggers themselves are built by :func:`sasa_det.engine.run.loggers.build_loggers` (Lightning's CSV,
TensorBoard, Weights & Biases and MLflow loggers), writing into the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sasa_det.choices import OptionError, choice

__all__ = ["LOGGER_NAMES", "LoggingOptions"]


#: experiment trackers ``logging.loggers`` may list (Lightning's loggers; wandb and mlflow are optional extras)
LOGGER_NAMES = ("csv", "tensorboard", "wandb", "mlflow")


@dataclass
class LoggingOptions:
    """Where a training run logs its metrics, the resolved config (as hyper-parameters) and the final COCO table:
    the ``logging`` section of an experiment config."""

    #: trackers: "csv" (the run's metrics.csv, always on) | "tensorboard" | "wandb" | "mlflow"
    loggers: list[str] = choice(LOGGER_NAMES, default_factory=lambda: ["csv", "tensorboard"])
    #: wandb project and mlflow experiment name
    project: str = "sasa_det"
    #: run name in wandb / mlflow; null = the output_dir's folder name
    run_name: Optional[str] = None
    #: wandb without network: the run is kept under output_dir/wandb/, to upload later with `wandb sync`
    offline: bool = False
    #: mlflow tracking URI; null = a local SQLite store, output_dir/mlflow.db (no server, no network)
    mlflow_tracking_uri: Optional[str] = None

    def validate(self) -> None:
        """``csv`` is always among the loggers (the plots and resuming read its metrics.csv)."""
        if "csv" not in self.loggers:
            raise OptionError(
                "loggers",
                f"{{key}}={list(self.loggers)} must include csv: tools/analyze.py and resuming read the run's "
                "CSV metrics; add the others beside it, e.g. [csv, wandb]",
            )
