"""Checkpoints that survive crashes: atomic writes, ``last.ckpt`` every N steps, RNG state, clean stops.

* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file beside the target, flushes it to
  disk and renames it over the target: a process killed while writing leaves the previous file intact
  (:func:`remove_partial_checkpoints` clears such a killed write's temporary file when the run resumes),
  and a full disk is reported as such (:class:`CheckpointWriteError`).
* :class:`LastCheckpoint` keeps ``checkpoints/last.ckpt`` current: every ``every_n_steps`` optimizer steps, at
  every epoch end and when training ends (so the final weights are always on disk).
* :class:`RngStateCheckpoint` stores the random generators of Python, NumPy and torch (CPU and CUDA) and
  puts them back before the first batch after a resume (the data order and augmentations do not depend on
  them: see :mod:`sasa_det.data.sampling`; models that sample, such as the R-CNN heads, do).
* :class:`StopOnSignal` turns SIGINT, SIGTERM and SIGUSR1 into a clean stop: at the end of the current step
  ``last.ckpt`` is written and :class:`TrainingInterrupted` is raised; under SLURM, SIGUSR1 (sent before the
  time limit with ``#SBATCH --signal=USR1@120``) also requeues the job, which resumes by itself.
* :class:`ExperimentConfigInCheckpoint` stores the resolved experiment config and the training set's
  fingerprint in every checkpoint.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

__all__ = [
    "CONFIG_KEY",
    "DATA_KEY",
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "ExperimentConfigInCheckpoint",
    "LastCheckpoint",
    "RngStateCheckpoint",
    "StopOnSignal",
    "TrainingInterrupted",
    "remove_partial_checkpoints",
    "sigterm_exception",
    "slurm_job_id",
]

logger = logging.getLogger(__name__)

#: Checkpoint entry holding the resolved experiment config (a plain dict).
CONFIG_KEY = "experiment_config"
#: Checkpoint entry holding the fingerprint of the training set the run was trained on (a plain dict).
DATA_KEY = "training_data"


#: Name prefix of the temporary files checkpoints are written to (``.<name>.tmp-<pid>`` beside the target).
_PARTIAL_GLOB = ".*.ckpt.tmp-*"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); the message names the file, what was
    needed and which checkpoint on disk is intact."""


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _no_space(error: BaseException) -> bool:
    """Whether ``error`` or an error it came from is ENOSPC (torch's zip writer wraps it in a RuntimeError)."""
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that never leaves a partly written file under the target name.

    A write that fails because the disk is full raises :class:`CheckpointWriteError` saying so, with the
    size needed, the free space and the state of the previous file (untouched: only the temporary file
    was being written, and it is removed).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with open(temporary, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except Exception as error:
            if not _no_space(error):
                raise
            if temporary.exists():
                temporary.unlink()
            free = shutil.disk_usage(target.parent).free
            previous = (
                f"the previous {target.name} ({_megabytes(target.stat().st_size)}) is intact"
                if target.exists()
                else f"no earlier {target.name} exists"
            )
            raise CheckpointWriteError(
                errno.ENOSPC,
                f"no space left on device while writing {target}: the checkpoint needs about "
                f"{_megabytes(_tensor_bytes(checkpoint))} and {_megabytes(free)} are free; {previous}. Free disk "
                "space (or move output_dir to a larger disk) and continue the run with --resume",
            ) from error
        finally:
            if temporary.exists():
                temporary.unlink()


def remove_partial_checkpoints(directory: str | os.PathLike) -> tuple[int, int]:
    """Delete the temporary files of checkpoint writes that were killed half way (the run holding
    ``directory`` must be the only writer). Returns ``(files removed, bytes freed)``."""
    removed, freed = 0, 0
    for partial in Path(directory).glob(_PARTIAL_GLOB):
        with suppress(FileNotFoundError):
            size = partial.stat().st_size
            partial.unlink()
            removed, freed = removed + 1, freed + size
    return removed, freed


class ExperimentConfigInCheckpoint(pl.Callback):
    """Stores the resolved experiment config (a plain dict) in every checkpoint under :data:`CONFIG_KEY`, and
    the training set's fingerprint (:func:`~sasa_det.engine.data_fingerprint.training_set_fingerprint`)
    under :data:`DATA_KEY` when given."""

    def __init__(self, config: Mapping, training_data: Optional[Mapping] = None):
        self.config = dict(config)
        self.training_data = dict(training_data) if training_data is not None else None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config
        if self.training_data is not None:
            checkpoint[DATA_KEY] = self.training_data


class LastCheckpoint(pl.Callback):
    """Writes ``<dirpath>/last.ckpt`` every ``every_n_steps`` optimizer steps (0: never mid-epoch), at every
    epoch end and at the end of training; :attr:`saved_step` is the global step of the file this process
    wrote (None until it writes one: a resumed run may write into another output_dir than its checkpoint's)."""

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int = 500):
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = int(every_n_steps)
        self.saved_step: Optional[int] = None

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


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # this process's device only: asking every visible GPU would open a CUDA context on each of them
        state["cuda"] = [torch.cuda.get_rng_state()]
        state["cuda_device"] = torch.cuda.current_device()
    return state


def _set_cuda_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the saved CUDA generator states onto the devices that exist now.

    Checkpoints hold the state of the saving process's device (``cuda_device`` set), which goes to the
    current device; older ones hold one state per visible device, restored onto the devices that exist
    (a run resumed on fewer or more GPUs than it was saved with gets a note, not an IndexError).
    """
    states = list(state["cuda"])
    available = torch.cuda.device_count()
    if not states or available == 0:
        if states:
            logger.info(
                "Resume: the checkpoint has CUDA generator states but no GPU is visible; they are not restored."
            )
        return
    if "cuda_device" in state:
        torch.cuda.set_rng_state(states[0], torch.cuda.current_device())
        return
    for index, device_state in enumerate(states[:available]):
        torch.cuda.set_rng_state(device_state, index)
    if len(states) != available:
        logger.info(
            "Resume: the checkpoint has CUDA generator states for %d GPUs and %d are visible now; restored %d, "
            "the others keep their seeded state.",
            len(states),
            available,
            min(len(states), available),
        )


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_as_python_state(state["python"]))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(position), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        _set_cuda_rng_state(state)


def _as_python_state(value: Any) -> tuple:
    # weights_only loading turns the state's tuples into lists; random.setstate wants tuples.
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


class RngStateCheckpoint(pl.Callback):
    """Saves the random generators' state with each checkpoint and restores it before the first training
    batch after a resume, so a resumed run draws the same random numbers as an uninterrupted one."""

    def __init__(self) -> None:
        self._pending: Optional[dict[str, Any]] = None

    def state_dict(self) -> dict[str, Any]:
        state = _rng_state()
        name, keys, position, has_gauss, cached = state["numpy"]
        # Tensors and plain values only, so that the checkpoint loads with weights_only=True.
        state["numpy"] = [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_train_batch_start(self, *args: Any) -> None:
        if self._pending is not None:
            _set_rng_state(self._pending)
            self._pending = None


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after writing a checkpoint.

    Attributes:
        signum: the signal (``signal.SIGINT``, ``SIGTERM`` or ``SIGUSR1``).
        checkpoint: the checkpoint written, or None.
        requeued: whether the SLURM job was requeued.
    """

    def __init__(self, signum: int, checkpoint: Optional[Path], step: int, requeued: bool = False):
        name = signal.Signals(signum).name
        where = f"; saved {checkpoint} at step {step}" if checkpoint is not None else "; no checkpoint could be written"
        super().__init__(f"training stopped by {name}{where}" + ("; the SLURM job was requeued" if requeued else ""))
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
