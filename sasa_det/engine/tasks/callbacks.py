"""Lightning callbacks of the training engine."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl

__all__ = ["STEP_TIME_METRIC", "CocoSummaryPrinter", "StepTimer", "ValidationRecorder", "format_coco_summary"]

#: The logged wall time of one training step (forward, backward, optimizer; not data loading), in ms.
STEP_TIME_METRIC = "train/step_ms"

# Rows of the printed summary: (label, metric suffix), in COCOeval's order.
_SUMMARY_ROWS = (
    ("AP @[.50:.95]", "AP"),
    ("AP @.50", "AP50"),
    ("AP @.75", "AP75"),
    ("AP small", "APs"),
    ("AP medium", "APm"),
    ("AP large", "APl"),
    ("AR @100", "AR100"),
)


def format_coco_summary(metrics: Mapping[str, float], prefix: str = "val/") -> str:
    """A text table of COCO metrics: one row per metric, one column per IoU type (bbox, segm).

    ``metrics`` maps ``"<prefix><iou_type>/<metric>"`` (e.g. ``"val/bbox/AP50"``) to a value in 0..1;
    missing entries print as ``-``.
    """
    iou_types = [t for t in ("bbox", "segm") if any(k.startswith(f"{prefix}{t}/") for k in metrics)]
    if not iou_types:
        return "(no COCO metrics)"
    lines = [f"{'metric':<16}" + "".join(f"{t:>9}" for t in iou_types)]
    for label, suffix in _SUMMARY_ROWS:
        cells = []
        for iou_type in iou_types:
            value = metrics.get(f"{prefix}{iou_type}/{suffix}")
            cells.append(f"{value:>9.4f}" if value is not None else f"{'-':>9}")
        lines.append(f"{label:<16}" + "".join(cells))
    return "\n".join(lines)


class CocoSummaryPrinter(pl.Callback):
    """Prints the COCO summary of each validation (and optionally the per-class AP table) on global rank 0.

    Reads ``pl_module.last_metrics`` (set by :class:`~sasa_det.engine.tasks.detection_module.DetectionModule` at
    the end of every validation epoch) and the module's evaluator for the per-class table.

    Args:
        per_class: also print the evaluator's per-class AP table.
        title: what is evaluated, printed in the header (default: the trainer's epoch and step, which are
            those of a training run, not of a checkpoint evaluated on its own).
    """

    def __init__(self, per_class: bool = False, title: str | None = None):
        self.per_class = per_class
        self.title = title

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = getattr(pl_module, "last_metrics", None)
        if not metrics:
            return
        title = self.title or f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        text = f"COCO evaluation ({title})\n"
        text += format_coco_summary(metrics)
        evaluator = getattr(pl_module, "evaluator", None)
        if self.per_class and evaluator is not None:
            text += "\n" + evaluator.per_class_table()
        progress_bar = trainer.progress_bar_callback
        if progress_bar is not None and hasattr(progress_bar, "print"):
            progress_bar.print(text)
        else:
            print(text, flush=True)


class ValidationRecorder(pl.Callback):
    """Remembers the metrics and global step of the last (non-sanity) validation pass.

    Attributes:
        metrics: ``{name: float}`` of the ``val/*`` entries of ``trainer.callback_metrics``, or None.
        step: ``trainer.global_step`` when they were computed, or None.
    """

    def __init__(self):
        self.metrics: dict[str, float] | None = None
        self.step: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.step = int(trainer.global_step)


class StepTimer(pl.Callback):
    """Logs each training step's wall time (batch start to batch end: forward, backward and optimizer step, not
    the data loading) as :data:`STEP_TIME_METRIC`, so a run's speed can be read from its metrics."""

    def __init__(self) -> None:
        self._started: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._started is not None:
            elapsed_ms = 1000.0 * (time.perf_counter() - self._started)
            pl_module.log(STEP_TIME_METRIC, elapsed_ms, on_step=True, on_epoch=False, batch_size=1)
            self._started = None
