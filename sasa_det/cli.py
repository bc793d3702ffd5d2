"""What the command-line tools share: an argument parser whose help is the tool's own docstring, and the one
path by which a tool reports a user's error.

Imports nothing heavy, so that a tool answers ``--help`` (or a mistyped flag) before loading torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["USER_ERRORS", "is_user_error", "run_tool", "tool_parser"]

#: Errors that describe something the user gave (a config, a path, a file, data, an extra to install): a tool
#: prints their message as one ``error: ...`` line instead of a traceback. Matched by class name (through the
#: class's bases), so that reporting one needs none of the modules that raise them.
USER_ERRORS = (
    "ConfigError",
    "OptionError",
    "CheckpointFileError",
    "CheckpointWriteError",
    "DatasetError",
    "ImageReadError",
    "MissingExtra",
    "MissingMatplotlib",
    "OutsideRunDirectory",
    "FileNotFoundError",
    "IsADirectoryError",
    "NotADirectoryError",
    "PermissionError",
)

#: Set this environment variable to see the traceback of a user's error too.
TRACEBACK_VARIABLE = "SASA_DET_TRACEBACK"


def tool_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by a tool's module docstring: its first paragraph, then the rest (the
    examples) as written."""
    summary, _, details = doc.partition("\n\n")
    return argparse.ArgumentParser(
        description=summary, epilog=details or None, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is one of :data:`USER_ERRORS` (or derives from one)."""
    return any(cls.__name__ in USER_ERRORS for cls in type(error).__mro__)


def run_tool(main: Callable[[], Any]) -> None:
    """Run a tool's ``main`` and exit with its status: a user's error prints ``error: <message>`` (with its
    cause) and exits 1; Ctrl-C outside training exits 130 with one line; any other exception is a bug and
    keeps its traceback. ``SASA_DET_TRACEBACK=1`` shows the traceback of users' errors too."""
    try:
        status = main()
    except KeyboardInterrupt:
        sys.exit("interrupted")
    except Exception as error:
        if not is_user_error(error) or os.environ.get(TRACEBACK_VARIABLE):
            raise
        cause = error.__cause__
        said = str(cause) if cause is not None else ""
        detail = f" (cause: {said})" if said and "\n" not in said and said not in str(error) else ""
        sys.exit(f"error: {error}{detail}")
    sys.exit(status if isinstance(status, int) else 0)
