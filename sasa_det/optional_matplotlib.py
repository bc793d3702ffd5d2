"""matplotlib, an optional dependency (the ``plots`` extra): importing it on the Agg backend, saving figures."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MissingMatplotlib", "require_matplotlib", "save_figure"]

INSTALL_HINT = "install it with `uv sync --extra plots` (or `pip install matplotlib`)"


class MissingMatplotlib(ImportError):
    """matplotlib is not installed; the message says how to install it."""


def require_matplotlib():
    """``matplotlib.pyplot`` on the Agg backend; MissingMatplotlib with the install command when absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise MissingMatplotlib(f"plotting needs matplotlib, which is optional: {INSTALL_HINT}") from err
    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save ``fig`` to ``path`` (folders created, tight bounding box) and close it; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
