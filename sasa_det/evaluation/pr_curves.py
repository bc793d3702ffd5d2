"""Optional plot of per-class precision/recall curves (needs matplotlib, which is not a dependency)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["plot_pr_curves"]


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, title: str = "precision / recall"
) -> Path:
    """Plot ``{class name: (recall [R], precision [R])}`` (e.g. ``CocoEvaluator.pr_curves()``) to an image file.

    Raises ImportError with the fix when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plot_pr_curves needs matplotlib; install it (pip install matplotlib).") from err
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
