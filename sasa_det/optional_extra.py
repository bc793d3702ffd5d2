"""Optional dependencies grouped as the package's extras (``pyproject.toml``): importing one with a message
that names the extra to install when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtra", "install_hint", "require_extra"]


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def install_hint(extra: str) -> str:
    """How to install the extra ``extra``: with pip, and in a clone of the repository with uv."""
    return f"install it with `pip install 'sasa-det[{extra}]'` (in a clone: `uv sync --extra {extra}`)"


def require_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """The imported ``module``; :class:`MissingExtra` naming ``extra`` when it cannot be imported.

    ``purpose`` says what needs it, e.g. ``"ONNX export"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtra(f"{purpose} needs {module}, which is optional: {install_hint(extra)}") from err
