"""Where a resumed run continues: the training loops' counters of a checkpoint, made unambiguous on load.

Lightning stores its loops' progress counters in every checkpoint and infers from them, on resume, where
the run stood. A checkpoint written at the end of an epoch (in ``on_train_epoch_end``, after the epoch's
validation: :class:`~sasa_det.engine.run.checkpoints.LastCheckpoint` writes ``last.ckpt`` there) holds
"epoch e processed, not yet completed"; Lightning 2.x reads that as a restart inside epoch ``e`` when the
run is bounded by ``trainer.max_steps`` as well, and counts epoch ``e`` twice: a run bounded by
``max_epochs`` then ends one epoch early.

:class:`ResumePosition` rewrites those counters, before Lightning reads them, to the state Lightning itself
has at the start of the next epoch (epoch ``e`` completed, no batch of ``e + 1`` started), so every bound
and every save point resumes the same way. Checkpoints saved mid-epoch are left as they are: Lightning
resumes them exactly (and the data position comes from
:class:`~sasa_det.data.loading.sampling.ResumableDataLoader`).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl

from sasa_det.checkpoint_file import read_checkpoint_file
from sasa_det.engine.run.checkpoints import DATA_KEY

__all__ = ["ResumePoint", "ResumePosition", "end_epoch_here", "read_resume_point", "start_next_epoch_if_epoch_ended"]

logger = logging.getLogger(__name__)


def _zero(progress: MutableMapping[str, Any]) -> None:
    for key, value in progress.items():
        if isinstance(value, MutableMapping):
            _zero(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            progress[key] = 0


def start_next_epoch_if_epoch_ended(fit_loop: MutableMapping[str, Any]) -> bool:
    """Rewrite a checkpoint's ``loops["fit_loop"]`` written at an epoch's end (its batches trained and its
    validation done) as the start of the next epoch. Returns whether it was such a checkpoint.

    An ended epoch reads ``epoch_progress`` ready == started == processed == completed + 1; afterwards
    completed == processed, and the per-epoch ("current") batch, scheduler and optimizer counters and the
    validation counters are zero, as Lightning leaves them when it starts an epoch. Totals are kept.
    """
    epochs = fit_loop.get("epoch_progress", {}).get("total")
    if not epochs:
        return False
    ended = epochs["ready"] == epochs["started"] == epochs["processed"] == epochs["completed"] + 1
    if not ended:
        return False
    for scope in ("total", "current"):
        fit_loop["epoch_progress"][scope]["completed"] = fit_loop["epoch_progress"][scope]["processed"]
    for key, value in fit_loop.items():
        if not key.startswith("epoch_loop.") or not isinstance(value, MutableMapping):
            continue
        if key.startswith("epoch_loop.val_loop."):
            _zero(value)  # the validation counters count per epoch (Lightning resets their totals too)
        elif "current" in value:
            _zero(value["current"])
        else:  # the optimizer's progress: {"optimizer": {"step": {...}, "zero_grad": {...}}}
            for part in value.get("optimizer", {}).values():
                if isinstance(part, MutableMapping) and "current" in part:
                    _zero(part["current"])
        if "is_last_batch" in value:
            value["is_last_batch"] = False
    return True


def _validation_lost(fit_loop: MutableMapping[str, Any]) -> bool:
    """Whether the checkpoint was written after an epoch's last training batch but before the epoch ended
    (a stop signal at that batch): Lightning resumes with the next epoch, without that epoch's validation."""
    batches = fit_loop.get("epoch_loop.batch_progress", {})
    epochs = fit_loop.get("epoch_progress", {}).get("total", {})
    return bool(batches.get("is_last_batch")) and epochs.get("processed", 0) < epochs.get("started", 0)


def end_epoch_here(fit_loop: MutableMapping[str, Any]) -> None:
    """Rewrite a checkpoint's ``loops["fit_loop"]`` so that the epoch it was written in counts as ended and
    the next one starts from its first batch (the rest of the interrupted epoch is not trained).

    Used when the training set changed since the checkpoint: the saved position inside the epoch would
    index the new set's images wrongly, so the data order restarts with the next epoch.
    """
    if not start_next_epoch_if_epoch_ended(fit_loop):
        for scope in ("total", "current"):  # shaped as an ended epoch (see above), then normalised
            epochs = fit_loop["epoch_progress"][scope]
            epochs.update(ready=epochs["started"], processed=epochs["started"], completed=epochs["started"] - 1)
        start_next_epoch_if_epoch_ended(fit_loop)
    for loader in fit_loop.get("state_dict", {}).get("combined_loader", []) or []:
        if isinstance(loader, MutableMapping) and "batches_done" in loader:
            loader["batches_done"] = _EPOCH_COMPLETE


#: A data position past any epoch's end: the loader starts the next epoch.
_EPOCH_COMPLETE = 2**62


@dataclass(frozen=True)
class ResumePoint:
    """Where a checkpoint stands, read without loading its tensors (:func:`read_resume_point`).

    Attributes:
        path: the checkpoint.
        global_step: optimizer steps trained.
        epochs_done: whole epochs trained (their validation included when the checkpoint was written at an
            epoch's end).
        training_data: the training set's fingerprint, or None (older checkpoints).
    """

    path: Path
    global_step: int
    epochs_done: int
    training_data: Optional[dict[str, Any]]


def read_resume_point(path: str | os.PathLike) -> ResumePoint:
    """The :class:`ResumePoint` of a checkpoint (its tensors are memory-mapped, not read)."""
    checkpoint = read_checkpoint_file(path, mmap=True)
    fit_loop = copy.deepcopy(checkpoint.get("loops", {}).get("fit_loop", {}))
    start_next_epoch_if_epoch_ended(fit_loop)
    epochs = fit_loop.get("epoch_progress", {}).get("current", {})
    return ResumePoint(
        path=Path(path),
        global_step=int(checkpoint.get("global_step", 0)),
        epochs_done=int(epochs.get("completed", checkpoint.get("epoch", 0))),
        training_data=checkpoint.get(DATA_KEY),
    )


class ResumePosition(pl.Callback):
    """Makes the loop counters of the checkpoint being resumed unambiguous (see the module docstring).

    Args:
        end_epoch: also end the epoch the checkpoint was written in (:func:`end_epoch_here`): the training
            set changed, so the data order restarts with the next epoch.
    """

    def __init__(self, end_epoch: bool = False):
        self.end_epoch = end_epoch
        self._resumed = False
        self.validated_step: Optional[int] = None

    def state_dict(self) -> dict[str, Any]:
        """The global step of the last validation that ran to its end (so a resume can tell a checkpoint
        written after its epoch's validation, such as ``best-*.ckpt``, from one written before it)."""
        return {"validated_step": self.validated_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validated_step = state_dict.get("validated_step")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated_step = int(trainer.global_step)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        # Lightning's restart can count one optimizer step too many in the step it logs under (seen after an
        # epoch-end checkpoint when max_steps is set): metrics of step s must be logged at step s, as in a
        # run that was never interrupted.
        if self._resumed:
            self._resumed = False
            epoch_loop = trainer.fit_loop.epoch_loop
            if hasattr(epoch_loop, "_batches_that_stepped"):
                epoch_loop._batches_that_stepped = int(trainer.global_step)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop")
        if fit_loop is None:
            return
        self._resumed = True
        epoch = int(checkpoint.get("epoch", 0))
        step = int(checkpoint.get("global_step", 0))
        own = next((v for k, v in checkpoint.get("callbacks", {}).items() if k.startswith("ResumePosition")), {})
        validated = own.get("validated_step") == step
        if self.end_epoch:
            end_epoch_here(fit_loop)
            logger.warning(
                "resume: epoch %d ends at step %d; epoch %d starts from the first batch of the new training set",
                epoch,
                int(checkpoint.get("global_step", 0)),
                epoch + 1,
            )
        elif _validation_lost(fit_loop) and validated:
            logger.info(
                "resume: the checkpoint was written after epoch %d's validation; training continues with epoch %d",
                epoch,
                epoch + 1,
            )
        elif _validation_lost(fit_loop):
            logger.warning(
                "resume: the run stopped after the last batch of epoch %d, before that epoch ended (and its validation, where one was due); it is "
                "not run again: epoch %d has no validation metrics, and best-*.ckpt is chosen among the others",
                epoch,
                epoch,
            )
        elif start_next_epoch_if_epoch_ended(fit_loop):
            logger.info(
                "resume: the checkpoint was written at the end of epoch %d; training continues with epoch %d",
                epoch,
                epoch + 1,
            )
