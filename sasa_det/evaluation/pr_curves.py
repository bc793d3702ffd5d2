"""Optional plot of per-class precision/recall curves (needs matplotlib: the ``plots`` extra)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sasa_det.optional_matplotlib import require_matplotlib, save_figure

__all__ = ["plot_pr_curves"]


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, title: str = "precision / recall"
) -> Path:
    """Plot ``{class name: (recall [R], precision [R])}`` (e.g. ``CocoEvaluator.pr_curves()``) to an image file.

    Raises ImportError (MissingMatplotlib) with the fix when matplotlib is not installed.
    """
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small")
    return save_figure(fig, path, dpi=120)
