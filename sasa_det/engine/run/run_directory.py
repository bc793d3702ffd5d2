"""The run directory's owner: every path of a run's layout, and the only code that replaces or deletes its files.

A training run lives in one folder (``output_dir``); an evaluation writes into a folder of the same kind::

    config.yaml              the resolved config
    train.log                everything the run logged (rank 0)
    .run.lock                held while a training runs there (engine.run.run_lock)
    checkpoints/             last.ckpt (every trainer.checkpoint_every_n_steps steps, every epoch end, the
                             final weights), best-epochEEE-stepSSSSSS.ckpt (highest val/mAP or val/top1), and
                             .<name>.ckpt.tmp-<pid> while a checkpoint is being written
    logs/version_0/          CSV metrics (metrics.csv, continued on resume) and hparams.yaml
    tensorboard/version_0/   TensorBoard events (logging.loggers; also wandb/, mlflow.db)
    data_report_<split>.txt  what the data checks fixed or dropped (and .json)
    init_from_report.json    what model.init_from and model.backbone.weights loaded, skipped and missed, by
                             part of the network (when set)
    metrics.json             the final weights' validation metrics (metrics_plain.json: without TTA)
    per_class.md             per-class AP table (detection)
    evaluation.json          per-class AP rows and precision/recall curves (detection)
    coco_summary.txt         COCOeval's printed summary (evaluations)
    detections_<iou>.json    COCO results (evaluations)
    errors/                  confusion matrix and false positives by kind (eval.error_analysis)
    predictions.png          validation images, each beside its ground truth (left) with the final model's
                             detections (right) (detection)
    analysis/                training curves, per-class AP and PR curves drawn by tools/analyze.py

:class:`RunDirectory` spells this layout (this module is the one place its file names are written) and is
the one code path that replaces, renames or deletes a run's files. It refuses any of that outside its own
folder (:class:`OutsideRunDirectory`, naming both paths): a checkpoint of another run that a run resumes or
starts from is read, never touched. Other modules ask it for paths; the loggers and the data module write
their own files at the paths it gives.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

__all__ = ["OutsideRunDirectory", "RunDirectory"]


class OutsideRunDirectory(PermissionError):
    """A run directory was asked to write, replace or delete a path outside its folder (refused)."""


class _InRun:
    """A path of the layout, relative to a run's folder: ``RunDirectory(root).<name>`` is ``root/<parts>``."""

    def __init__(self, *parts: str):
        self.parts = parts

    def __get__(self, run: RunDirectory | None, owner: type) -> Any:
        return self if run is None else run.root.joinpath(*self.parts)


class RunDirectory:
    """The folder of one run (or one evaluation) and its layout (see the module docstring).

    Args:
        root: the folder (``output_dir``); it is created by the first write, not here.
    """

    CHECKPOINTS = "checkpoints"
    LAST_CHECKPOINT = "last.ckpt"
    #: Lightning ``ModelCheckpoint`` filename pattern of the best checkpoint (``{epoch}``/``{step}`` filled).
    BEST_PATTERN = "best-epoch{epoch:03d}-step{step:06d}"
    #: CSV logger ``name`` and ``version``: ``logs/version_0/metrics.csv``.
    CSV_LOGS = ("logs", 0)
    TENSORBOARD_LOGS = ("tensorboard", 0)

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.root)!r})"

    # ------------------------------------------------------------------ the layout
    #: the resolved config of the run: ``tools/train.py --resume DIR`` reads the checkpoints' copy of it
    config_file = _InRun("config.yaml")
    #: everything the run logged (rank 0)
    train_log = _InRun("train.log")
    #: held while a training runs in the folder (:mod:`~sasa_det.engine.run.run_lock`)
    lock_file = _InRun(".run.lock")
    checkpoints_dir = _InRun(CHECKPOINTS)
    last_checkpoint = _InRun(CHECKPOINTS, LAST_CHECKPOINT)
    #: Lightning's CSV metrics (``CSV_LOGS``), continued on resume
    csv_metrics = _InRun(CSV_LOGS[0], f"version_{CSV_LOGS[1]}", "metrics.csv")
    tensorboard_dir = _InRun(TENSORBOARD_LOGS[0], f"version_{TENSORBOARD_LOGS[1]}")
    #: the local MLflow store when ``logging.mlflow_tracking_uri`` is not set
    mlflow_store = _InRun("mlflow.db")
    #: what ``model.init_from`` (and ``model.backbone.weights``) loaded, skipped and missed, by part
    init_from_report = _InRun("init_from_report.json")
    #: the final weights' validation metrics (an evaluation's metrics)
    metrics_file = _InRun("metrics.json")
    #: an evaluation with test-time augmentation: the plain pass's metrics
    plain_metrics_file = _InRun("metrics_plain.json")
    per_class_file = _InRun("per_class.md")
    #: per-class AP rows and precision/recall curves
    evaluation_file = _InRun("evaluation.json")
    coco_summary_file = _InRun("coco_summary.txt")
    #: the confusion matrix and false positives by kind
    errors_dir = _InRun("errors")
    predictions_png = _InRun("predictions.png")
    #: ``tools/analyze.py``'s plots (training curves, per-class AP, PR curves)
    analysis_dir = _InRun("analysis")

    def best_checkpoint(self, epoch: int, step: int) -> Path:
        """The best checkpoint's file for ``epoch`` and global ``step`` (as Lightning names it)."""
        return self.checkpoints_dir / (self.BEST_PATTERN.format(epoch=epoch, step=step) + ".ckpt")

    def best_checkpoints(self) -> list[Path]:
        """The run's ``best-*.ckpt`` files, oldest name first."""
        return sorted(self.checkpoints_dir.glob("best-*.ckpt"))

    def checkpoints(self) -> list[Path]:
        """Every checkpoint of the run (``checkpoints/*.ckpt`` and Lightning's ``hpc_ckpt_*.ckpt``), newest first."""
        found = list(self.checkpoints_dir.glob("*.ckpt")) + list(self.root.glob("hpc_ckpt_*.ckpt"))
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    @staticmethod
    def temporary_for(target: str | os.PathLike) -> Path:
        """Where a write of ``target`` goes before it is renamed over it (``.<name>.tmp-<pid>`` beside it)."""
        target = Path(target)
        return target.with_name(f".{target.name}.tmp-{os.getpid()}")

    def partial_checkpoints(self) -> list[Path]:
        """Temporary checkpoint files left by writes that were killed half way."""
        return sorted(self.checkpoints_dir.glob(".*.ckpt.tmp-*"))

    def detections_file(self, iou_type: str) -> Path:
        return self.root / f"detections_{iou_type}.json"

    def data_report(self, split: str) -> Path:
        """The data checks' report of ``split`` (``.json``; the text beside it as ``.txt``)."""
        return self.root / f"data_report_{split}.json"

    @staticmethod
    def evaluation_dir_for(checkpoint: str | os.PathLike) -> Path:
        """Default folder of an evaluation of ``checkpoint``: ``eval_<checkpoint name>/`` beside it."""
        checkpoint = Path(checkpoint)
        return checkpoint.resolve().parent / f"eval_{checkpoint.stem}"

    # ------------------------------------------------------------------ ownership
    def owns(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` lies inside this run's folder (links resolved)."""
        root = self.root.resolve()
        target = Path(path).resolve()
        return target == root or root in target.parents

    def _inside(self, path: str | os.PathLike, action: str) -> Path:
        path = Path(path)
        if not self.owns(path):
            raise OutsideRunDirectory(
                f"refusing to {action} {path.resolve()}: it is outside the run directory {self.root.resolve()}, "
                "which only changes its own files"
            )
        return path

    # ------------------------------------------------------------------ the only writes that replace or delete
    def write_with(self, path: str | os.PathLike, write: Callable[[IO[bytes]], Any], durable: bool = False) -> Path:
        """Write ``path`` (inside the run) atomically: ``write(handle)`` fills a temporary file beside it,
        which is then renamed over ``path``; a failed write leaves the previous file intact and no
        temporary behind. ``durable``: flush to disk before the rename (checkpoints)."""
        path = self._inside(path, "write")
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.temporary_for(path)
        try:
            with open(temporary, "wb") as handle:
                write(handle)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(temporary, path)
        finally:
            with suppress(FileNotFoundError):
                temporary.unlink()
        return path

    def write_text(self, path: str | os.PathLike, text: str) -> Path:
        """Write ``text`` (UTF-8) to ``path`` inside the run, atomically."""
        return self.write_with(path, lambda handle: handle.write(text.encode("utf-8")))

    def write_json(self, path: str | os.PathLike, data: Any, indent: int = 2) -> Path:
        """Write ``data`` as JSON to ``path`` inside the run, atomically."""
        return self.write_text(path, json.dumps(data, indent=indent) + "\n")

    def copy_in(self, source: str | os.PathLike, target: str | os.PathLike) -> Path:
        """Copy ``source`` (read only; it may lie anywhere) to ``target`` inside the run, atomically."""
        with open(source, "rb") as reader:
            return self.write_with(target, lambda handle: shutil.copyfileobj(reader, handle))

    def rename(self, source: str | os.PathLike, target: str | os.PathLike) -> Path:
        """Move ``source`` to ``target``, both inside the run (replacing ``target``)."""
        source, target = self._inside(source, "move"), self._inside(target, "replace")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        return target

    def delete(self, path: str | os.PathLike, missing_ok: bool = True) -> bool:
        """Delete the file ``path`` inside the run; returns whether a file was removed."""
        path = self._inside(path, "delete")
        try:
            path.unlink()
        except FileNotFoundError:
            if not missing_ok:
                raise
            return False
        return True

    def create_exclusive(self, path: str | os.PathLike) -> int:
        """Create ``path`` inside the run only if it does not exist (``O_EXCL``); returns the open descriptor.

        Raises:
            FileExistsError: it exists.
        """
        path = self._inside(path, "create")
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)

    def remove_partial_checkpoints(self) -> tuple[int, int]:
        """Delete the temporary files of checkpoint writes that were killed half way (the run holding the
        directory must be the only writer). Returns ``(files removed, bytes freed)``."""
        removed, freed = 0, 0
        for partial in self.partial_checkpoints():
            with suppress(FileNotFoundError):
                size = partial.stat().st_size
                if self.delete(partial):
                    removed, freed = removed + 1, freed + size
        return removed, freed
