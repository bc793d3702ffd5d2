"""A resumed run continues its logged history instead of starting a new one.

Lightning's CSV logger deletes an existing ``metrics.csv`` when it opens its folder, so a resumed run
used to hold only the steps after the resume. :class:`CsvHistory` sets the file aside before training
starts and writes it back once the checkpoint is restored, without the rows that the lost part of the run
logged after the checkpoint (the resumed run trains and logs those steps again). TensorBoard does the same
for its events with ``purge_step`` (see ``runner._loggers``).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger

__all__ = ["CsvHistory"]

logger = logging.getLogger(__name__)


class CsvHistory(pl.Callback):
    """Keeps the rows of ``metrics.csv`` logged before the checkpoint a run resumes from (global rank 0).

    Args:
        csv_path: the run's ``logs/version_0/metrics.csv``.
        resume_step: global step of the checkpoint: rows logged at this step or later are dropped.
    """

    def __init__(self, csv_path: str | Path, resume_step: int):
        self.csv_path = Path(csv_path)
        self.aside = self.csv_path.with_name(self.csv_path.name + ".before-resume")
        self.resume_step = int(resume_step)

    def set_aside(self) -> None:
        """Move ``metrics.csv`` out of the CSV logger's reach (call before the trainer opens its loggers)."""
        if self.aside.exists():  # an earlier resume stopped before writing the history back: that copy is whole
            self.csv_path.unlink(missing_ok=True)
        elif self.csv_path.exists():
            self.csv_path.rename(self.aside)

    def _read_kept(self) -> tuple[list[str], list[dict[str, Any]], int]:
        with open(self.aside, newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        kept = [row for row in rows if row.get("step", "") != "" and int(float(row["step"])) < self.resume_step]
        return header, kept, len(rows) - len(kept)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not self.aside.exists():
            return
        csv_logger = next((log for log in trainer.loggers if isinstance(log, CSVLogger)), None)
        if csv_logger is None:  # this run logs no CSV: the file stays as it was
            self.aside.replace(self.csv_path)
            return
        header, kept, dropped = self._read_kept()
        writer = csv_logger.experiment
        writer.save()  # anything logged so far goes first into a fresh file, then is rewritten below
        rows_now = []
        if self.csv_path.exists():
            with open(self.csv_path, newline="") as handle:
                rows_now = list(csv.DictReader(handle))
        fields = sorted(set(header) | set(getattr(writer, "metrics_keys", [])))
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.csv_path, "w", newline="") as handle:
            out = csv.DictWriter(handle, fieldnames=fields)
            out.writeheader()
            out.writerows(kept + rows_now)
        if hasattr(writer, "metrics_keys"):  # Lightning appends to the file: it must know its header
            writer.metrics_keys[:] = fields
        else:  # older Lightning rewrites the file from its own rows at every save
            writer.metrics[:0] = kept
        self.aside.unlink()
        logger.info(
            "logs: %s continues the run's history (%d rows before step %d kept, %d rows logged after the "
            "checkpoint dropped: those steps are trained again)",
            self.csv_path,
            len(kept),
            self.resume_step,
            dropped,
        )
