"""Clean stops on signals: SIGINT, SIGTERM and SIGUSR1 end training after the current step with last.ckpt written.

:class:`StopOnSignal` turns the signals into a clean stop: at the end of the current step ``last.ckpt`` is
written and :class:`TrainingInterrupted` is raised; under SLURM, SIGUSR1 (sent before the time limit with
``#SBATCH --signal=USR1@120``) also requeues the job, which resumes by itself.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch

from sasa_det.engine.run.checkpoints import LastCheckpoint

__all__ = [
    "StopOnSignal",
    "TrainingInterrupted",
    "SigtermOutsideFit",
    "sigterm_exception",
    "slurm_job_id",
    "stop_on_sigterm_outside_fit",
]

logger = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after writing a checkpoint.

    Attributes:
        signum: the signal (``signal.SIGINT``, ``SIGTERM`` or ``SIGUSR1``).
        checkpoint: the checkpoint written, or None.
        requeued: whether the SLURM job was requeued.
    """

    def __init__(self, signum: int, checkpoint: Optional[Path], step: int, requeued: bool = False, during: str = ""):
        name = signal.Signals(signum).name
        where = f"; saved {checkpoint} at step {step}" if checkpoint is not None else "; no checkpoint could be written"
        during = f" {during}" if during else ""
        super().__init__(
            f"training stopped by {name}{during}{where}" + ("; the SLURM job was requeued" if requeued else "")
        )
        self.signum = int(signum)
        self.checkpoint = checkpoint
        self.step = int(step)
        self.requeued = requeued


def sigterm_exception() -> type[BaseException]:
    """Lightning's exception for a SIGTERM stop (``SIGTERMException``, Lightning >= 2.5), else a type nothing raises."""
    try:
        from pytorch_lightning.utilities.exceptions import SIGTERMException
    except ImportError:  # older Lightning stops without raising

        class _NeverRaised(BaseException):
            pass

        return _NeverRaised
    return SIGTERMException


@dataclass
class SigtermOutsideFit:
    """What a SIGTERM outside ``fit`` reports: the stage it interrupted and the checkpoint already on disk."""

    during: str = "while preparing"  #: the stage, as the message says it
    checkpoint: Optional[Path] = None  #: the checkpoint written so far (None before training)
    step: int = 0  #: that checkpoint's step

    def finished_training(self, checkpoint: Optional[Path], step: int) -> None:
        """``fit`` ended with ``checkpoint`` written at ``step``: a SIGTERM from now on interrupts the final
        evaluation, and the trained weights are safe."""
        self.during, self.checkpoint, self.step = (
            "during the final evaluation (training had finished)",
            checkpoint,
            step,
        )


@contextmanager
def stop_on_sigterm_outside_fit() -> Iterator[SigtermOutsideFit]:
    """Outside ``fit`` (while a training prepares, and during its final evaluation) SIGTERM raises
    :class:`TrainingInterrupted` naming the stage and the checkpoint already written, instead of killing the
    process, so that the run's lock and files are released on the way out; :class:`StopOnSignal` takes over
    during ``fit``. The previous handler comes back on exit. A no-op outside the main thread, where handlers
    cannot be set."""
    stage = SigtermOutsideFit()
    if threading.current_thread() is not threading.main_thread():
        yield stage
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise TrainingInterrupted(signum, stage.checkpoint, stage.step, during=stage.during)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield stage
    finally:
        signal.signal(signal.SIGTERM, previous)


def slurm_job_id() -> Optional[str]:
    """The SLURM job id to requeue (the array's master job for an array task), or None outside SLURM."""
    array_id = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_id is not None:
        return f"{array_id}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}".rstrip("_")
    return os.environ.get("SLURM_JOB_ID")


class StopOnSignal(pl.Callback):
    """Stops training cleanly on SIGINT, SIGTERM or SIGUSR1, writing ``last.ckpt`` first.

    Install the handlers with :meth:`installed` around ``trainer.fit`` (Lightning then keeps ours for
    SIGUSR1 and SIGINT, and calls ours after its own for SIGTERM). At the end of the step in which a signal
    arrived (all ranks agree on it) ``last`` writes ``last.ckpt`` and :class:`TrainingInterrupted` is raised.
    A second SIGINT stops at once (KeyboardInterrupt). Under SLURM, SIGUSR1 requeues the job
    (``scontrol requeue``) after the checkpoint is written; the requeued job resumes by itself.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, last: LastCheckpoint):
        self.last = last
        self.received: Optional[int] = None

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            logger.warning(
                "received %s: stopping after the current step and saving a checkpoint", signal.Signals(signum).name
            )
        self.received = self.received or signum

    @contextmanager
    def installed(self) -> Iterator[StopOnSignal]:
        """Install the handlers for the duration of the block (main thread only; elsewhere a no-op)."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in self.SIGNALS}
        for s in self.SIGNALS:
            signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _agreed_signal(self, trainer: pl.Trainer) -> int:
        local = self.received or (signal.SIGTERM if getattr(trainer, "received_sigterm", False) else 0)
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([int(local)], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            return int(flag.item())
        return int(local)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        signum = self._agreed_signal(trainer)
        if not signum:
            return
        path = self.last.save(trainer)
        requeued = False
        job = slurm_job_id()
        if signum == signal.SIGUSR1 and job is not None:
            if trainer.is_global_zero:
                result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
                requeued = result.returncode == 0
                if not requeued:
                    logger.error("scontrol requeue %s failed: %s", job, result.stderr.strip())
        raise TrainingInterrupted(signum, path, trainer.global_step, requeued)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # SIGTERM during validation: Lightning stops there (raising its SIGTERMException); keep the state too.
        if isinstance(exception, sigterm_exception()) and self.last.saved_step != trainer.global_step:
            self.last.save(trainer)
