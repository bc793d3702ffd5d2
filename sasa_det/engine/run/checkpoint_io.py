"""Checkpoint files that survive crashes and full disks, written and removed only through the run directory.

:class:`AtomicCheckpointIO` is the Lightning checkpoint IO of a training run: every checkpoint goes to a
temporary file beside its target, is flushed to disk and renamed over the target
(:meth:`RunDirectory.write_with`), so a process killed while writing leaves the previous file intact
(the run's next start clears such a temporary file: :meth:`RunDirectory.remove_partial_checkpoints`), and a
full disk is reported as such (:class:`CheckpointWriteError`). Lightning's removal of a superseded best
checkpoint goes through :meth:`RunDirectory.delete` too, which refuses any file outside the run's folder.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from sasa_det.engine.run.run_directory import RunDirectory

__all__ = ["AtomicCheckpointIO", "CheckpointWriteError"]


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
    """Lightning checkpoint IO that never leaves a partly written file under the target name, and never
    writes or removes a file outside ``run_dir``.

    A write that fails because the disk is full raises :class:`CheckpointWriteError` saying so, with the
    size needed, the free space and the state of the previous file (untouched: only the temporary file
    was being written, and it is removed).
    """

    def __init__(self, run_dir: RunDirectory):
        super().__init__()
        self.run_dir = run_dir

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        target = Path(path)
        try:
            self.run_dir.write_with(target, lambda handle: torch.save(checkpoint, handle), durable=True)
        except Exception as error:
            if not _no_space(error):
                raise
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

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        """Lightning's removal of a superseded checkpoint: only inside the run directory."""
        self.run_dir.delete(path)
