"""One training at a time in a run directory: ``output_dir/.run.lock``.

Two trainings writing into one ``output_dir`` interleave their checkpoints and logs, and neither notices.
The first to start creates the lock file atomically (``O_CREAT | O_EXCL``) with its host, pid, start time
and SLURM job id; a second start finds it and is refused with the holder named. A lock left behind by a
process that is gone is taken over with a line saying so:

* same host, and the process no longer exists (a SIGKILL, an out-of-memory kill, a crash);
* same SLURM job id (a requeued job restarts on any node, and its previous incarnation is gone).

A lock held from another host by a job that is not ours cannot be checked from here: the message says how
to remove it when that run is known to be gone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from typing import Any, Optional

from sasa_det.config import ConfigError
from sasa_det.engine.run.run_directory import RunDirectory

__all__ = ["RunLock", "RunLocked", "is_first_process"]

logger = logging.getLogger(__name__)


class RunLocked(ConfigError):
    """Another training holds the run directory; the message names it and what to do."""


def is_first_process() -> bool:
    """Whether this process is global rank 0 of its training, read from the variables launchers set
    (``RANK``, SLURM's ``SLURM_PROCID``; else ``NODE_RANK``/``GROUP_RANK`` and ``LOCAL_RANK``): only it takes
    the lock, since every process of a multi-node training runs the same command."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name) not in (None, ""):
            return int(os.environ[name]) == 0
    node = int(os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK") or 0)
    return node == 0 and int(os.environ.get("LOCAL_RANK") or 0) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}, started {when}: {holder.get('command', '?')}"


class RunLock:
    """The lock of one run directory; use as a context manager around a training (global rank 0 only).

    Args:
        run_dir: the run directory (created if missing), or its path.
    """

    def __init__(self, run_dir: RunDirectory | str | os.PathLike):
        self.run_dir = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
        self.path = self.run_dir.lock_file
        self.held = False

    def _record(self) -> dict[str, Any]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "command": " ".join(sys.argv)[:500],
        }

    def _read(self) -> Optional[dict[str, Any]]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # half-written by a process killed while creating it

    def _stale(self, holder: dict[str, Any]) -> Optional[str]:
        """Why ``holder`` is gone (so the lock may be taken over), or None when it may still run."""
        if not holder:
            return "the lock file is empty or unreadable"
        job = os.environ.get("SLURM_JOB_ID")
        if job is not None and holder.get("slurm_job_id") == job:
            return f"it belongs to this SLURM job ({job}), which was requeued"
        if holder.get("host") == socket.gethostname():
            pid = int(holder.get("pid", -1))
            if pid == os.getpid():
                return "it is this process's own"
            if pid <= 0 or not _alive(pid):
                return f"process {pid} no longer runs"
        return None

    def check(self) -> None:
        """Refuse now, before any other check, when a live training holds the directory (nothing is taken).

        Raises:
            RunLocked: as :meth:`acquire` would.
        """
        holder = self._read()
        if holder is not None and self._stale(holder) is None:
            raise RunLocked(self._refusal(holder))

    def _refusal(self, holder: dict[str, Any]) -> str:
        return (
            f"output_dir {self.path.parent} is in use by another training ({_describe(holder)}). "
            "Wait for it to end, or train into another output_dir. If that run is known to be gone "
            f"(its machine crashed), delete {self.path} and start again"
        )

    def acquire(self) -> None:
        """Take the lock, or take over a stale one.

        Raises:
            RunLocked: another training holds the directory.
        """
        for _ in range(3):
            try:
                descriptor = self.run_dir.create_exclusive(self.path)
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    continue  # released meanwhile
                reason = self._stale(holder)
                if reason is None:
                    raise RunLocked(self._refusal(holder)) from None
                logger.warning("taking over the run lock %s: %s (%s)", self.path, reason, _describe(holder))
                self.run_dir.delete(self.path)
                continue
            with os.fdopen(descriptor, "w") as handle:
                json.dump(self._record(), handle)
            self.held = True
            return
        raise RunLocked(f"could not take the run lock {self.path}: it keeps being recreated by another process")

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self.held:
            holder = self._read()
            if holder is not None and holder.get("pid") == os.getpid():
                self.run_dir.delete(self.path)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
