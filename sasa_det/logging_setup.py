"""Logging set-up for the command-line tools: the library's INFO messages reach the terminal and the run's log.

The library only logs (``logging.getLogger(__name__)``); the tools call :func:`configure_logging` before
importing anything heavy, so that Lightning's messages go through the same handlers, and
:func:`log_to_file` once the run directory is known.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

__all__ = ["configure_logging", "log_to_file"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Send log records of ``level`` and above to standard error (once per process)."""
    root = logging.getLogger()
    if not any(getattr(h, "_sasa_det", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler._sasa_det = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning.fabric"):
        # Lightning installs its own handler when imported before logging is configured; route it through ours.
        library = logging.getLogger(name)
        library.handlers = [h for h in library.handlers if not isinstance(h, logging.StreamHandler)]
        library.propagate = True


def log_to_file(path: str | os.PathLike, level: int = logging.INFO) -> Path:
    """Also append every record of ``level`` and above to ``path`` (parent folders created); returns it."""
    target = Path(path).resolve()
    root = logging.getLogger()
    if any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == target for h in root.handlers):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(target, mode="a")
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(level)
    root.addHandler(handler)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    return target
