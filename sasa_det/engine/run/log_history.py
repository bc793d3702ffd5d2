"""A resumed run continues its logged history instead of starting a new one.

Lightning's CSV logger deletes an existing ``metrics.csv`` when it opens its folder, so a resumed run
used to hold only the steps after the resume. :class:`CsvHistory` sets the file aside before training
starts and writes it back once the checkpoint is restored, without the rows that the lost part of the run
logged after the checkpoint (the resumed run trains and logs those steps again). TensorBoard does the same
for its events with ``purge_step`` (see :func:`sasa_det.engine.run.loggers.build_loggers`). The files are
moved, replaced and deleted through the run directory.
"""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger

from sasa_det.engine.run.run_directory import RunDirectory

__all__ = ["CsvHistory"]

logger = logging.getLogger(__name__)


class CsvHistory(pl.Callback):
    """Keeps the rows of ``metrics.csv`` logged before the checkpoint a run resumes from (global rank 0).

    Args:
        run_dir: the run directory, whose ``logs/version_0/metrics.csv`` is continued.
        resume_step: global step of the checkpoint: rows logged at this step or later are dropped.
    """

    def __init__(self, run_dir: RunDirectory, resume_step: int):
        self.run_dir = run_dir
        self.csv_path = run_dir.csv_metrics
        self.aside = self.csv_path.with_name(self.csv_path.name + ".before-resume")
        self.resume_step = int(resume_step)

    def set_aside(self) -> None:
        """Move ``metrics.csv`` out of the CSV logger's reach (call before the trainer opens its loggers)."""
        if self.aside.exists():  # an earlier resume stopped before writing the history back: that copy is whole
            self.run_dir.delete(self.csv_path)
        elif self.csv_path.exists():
            self.run_dir.rename(self.csv_path, self.aside)

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
            self.run_dir.rename(self.aside, self.csv_path)
            return
        header, kept, dropped = self._read_kept()
        writer = csv_logger.experiment
        writer.save()  # anything logged so far goes first into a fresh file, then is rewritten below
        rows_now = []
        if self.csv_path.exists():
            with open(self.csv_path, newline="") as handle:
                rows_now = list(csv.DictReader(handle))
        fields = sorted(set(header) | set(getattr(writer, "metrics_keys", [])))
        text = io.StringIO(newline="")
        out = csv.DictWriter(text, fieldnames=fields)
        out.writeheader()
        out.writerows(kept + rows_now)
        self.run_dir.write_text(self.csv_path, text.getvalue())
        if hasattr(writer, "metrics_keys"):  # Lightning appends to the file: it must know its header
            writer.metrics_keys[:] = fields
        else:  # older Lightning rewrites the file from its own rows at every save
            writer.metrics[:0] = kept
        self.run_dir.delete(self.aside)
        logger.info(
            "logs: %s continues the run's history (%d rows before step %d kept, %d rows logged after the "
            "checkpoint dropped: those steps are trained again)",
            self.csv_path,
            len(kept),
            self.resume_step,
            dropped,
        )
