"""The run's checkpoints: ``last.ckpt`` kept current, the best one chosen, the experiment stored in each.

* :class:`LastCheckpoint` keeps ``checkpoints/last.ckpt`` current: every ``every_n_steps`` optimizer steps, at
  every epoch end and when training ends (so the final weights are always on disk).
* :class:`BestCheckpoint` is Lightning's ``ModelCheckpoint`` for ``best-*.ckpt`` bound to the run directory: a
  run resumed (or started) from another run's checkpoint forgets that run's best file instead of replacing
  or deleting it, and :meth:`BestCheckpoint.promote` makes the final weights the best when they are.
* :class:`ExperimentConfigInCheckpoint` stores the resolved experiment config and the training set's
  fingerprint in every checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from sasa_det.engine.run.run_directory import RunDirectory

__all__ = ["CONFIG_KEY", "DATA_KEY", "BestCheckpoint", "ExperimentConfigInCheckpoint", "LastCheckpoint"]

logger = logging.getLogger(__name__)

#: Checkpoint entry holding the resolved experiment config (a plain dict).
CONFIG_KEY = "experiment_config"
#: Checkpoint entry holding the fingerprint of the training set the run was trained on (a plain dict).
DATA_KEY = "training_data"


class ExperimentConfigInCheckpoint(pl.Callback):
    """Stores the resolved experiment config (a plain dict) in every checkpoint under :data:`CONFIG_KEY`, and
    the training set's fingerprint (:func:`~sasa_det.engine.run.data_fingerprint.training_set_fingerprint`)
    under :data:`DATA_KEY` when given."""

    def __init__(self, config: Mapping, training_data: Optional[Mapping] = None):
        self.config = dict(config)
        self.training_data = dict(training_data) if training_data is not None else None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config
        if self.training_data is not None:
            checkpoint[DATA_KEY] = self.training_data


class LastCheckpoint(pl.Callback):
    """Writes the run's ``checkpoints/last.ckpt`` every ``every_n_steps`` optimizer steps (0: never mid-epoch),
    at every epoch end and at the end of training; :attr:`saved_step` is the global step of the file this
    process wrote (None until it writes one: a resumed run may write into another output_dir than its
    checkpoint's)."""

    def __init__(self, run_dir: RunDirectory, every_n_steps: int = 500):
        self.path = run_dir.last_checkpoint
        self.every_n_steps = int(every_n_steps)
        self.saved_step: Optional[int] = None

    @property
    def written(self) -> Optional[Path]:
        """``last.ckpt`` if this process has written it (at :attr:`saved_step`), else None."""
        return self.path if self.saved_step is not None else None

    def save(self, trainer: pl.Trainer) -> Path:
        """Write ``last.ckpt`` now (all ranks must call this: the strategy synchronises them); the loggers'
        buffered rows are flushed first, so the logs on disk reach at least the checkpoint's step."""
        for run_logger in trainer.loggers:
            run_logger.save()
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step = int(trainer.global_step)
        return self.path

    def _save_if_new(self, trainer: pl.Trainer) -> None:
        if trainer.global_step != self.saved_step and not trainer.sanity_checking:
            self.save(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # written at the epoch's end instead, after its validation (a resume then need not redo it)
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self._save_if_new(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_if_new(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_if_new(trainer)


class BestCheckpoint(ModelCheckpoint):
    """``checkpoints/best-epochEEE-stepSSSSSS.ckpt``: the checkpoint of the highest ``monitor`` (one kept).

    Lightning restores ``best_model_path`` from any checkpoint it resumes, even one of another run; a path
    outside this run's folder is forgotten here (with the score that came with it), so the other run's file
    is never replaced or deleted (the run directory would refuse it anyway).
    """

    def __init__(self, run_dir: RunDirectory, monitor: str):
        super().__init__(
            dirpath=str(run_dir.checkpoints_dir),
            filename=run_dir.BEST_PATTERN,
            auto_insert_metric_name=False,
            monitor=monitor,
            mode="max",
            save_top_k=1,
            save_last=False,
        )
        self.run_dir = run_dir

    @property
    def state_key(self) -> str:
        """Lightning's key of this callback's state in a checkpoint: ``ModelCheckpoint``'s, so that checkpoints
        written before this class existed resume with their best checkpoint known."""
        return "ModelCheckpoint" + super().state_key[len(type(self).__qualname__) :]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self.best_model_path and not self.run_dir.owns(self.best_model_path):
            logger.info(
                "resume: the best checkpoint of the run resumed from (%s) stays there; this run in %s chooses its own",
                self.best_model_path,
                self.run_dir.root,
            )
            self.best_model_path, self.best_model_score = "", None
            self.best_k_models, self.kth_best_model_path, self.last_model_path = {}, "", ""

    def promote(self, trainer: pl.Trainer, last: Path, score: float) -> Optional[Path]:
        """Make the final weights (``last``, written at this step) the best checkpoint when ``score`` beats the
        best one's; returns the new best file, or None when the best stays."""
        previous = self.best_model_score
        if previous is not None and not score > float(previous):
            return None
        target = self.run_dir.best_checkpoint(trainer.current_epoch, trainer.global_step)
        self.run_dir.copy_in(last, target)
        if self.best_model_path and Path(self.best_model_path) != target:
            self.run_dir.delete(self.best_model_path)
        self.best_model_path, self.best_model_score = str(target), torch.tensor(score)
        self.best_k_models = {str(target): self.best_model_score}
        return target
