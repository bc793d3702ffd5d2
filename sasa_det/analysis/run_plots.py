"""Plots of a finished training run: training curves from Lightning's ``metrics.csv``, per-class AP bars and
precision/recall curves from ``evaluation.json`` (needs matplotlib: the ``plots`` extra)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from sasa_det.engine.run.run_directory import RunDirectory
from sasa_det.optional_matplotlib import require_matplotlib, save_figure

__all__ = ["analyze_run", "plot_per_class_ap", "plot_training_curves", "read_metrics_csv"]

# (panel title, column filter, lowest value drawn): the training-curve panels, in order. COCO writes -1 for
# an undefined AP (e.g. no large objects), which is left out.
_PANELS = (
    ("training losses", lambda name: name.startswith("train/"), -math.inf),
    ("learning rate", lambda name: name.startswith("lr-"), -math.inf),
    ("validation AP", lambda name: name.startswith("val/") and "AP" in name, 0.0),
)


def read_metrics_csv(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(step, value), ...]}`` of a Lightning CSVLogger file, whose rows are sparse (each row holds
    only some columns); empty cells are skipped. FileNotFoundError names the file and its writer."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: Lightning's CSV logger writes it during training (tools/train.py)")
    series: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            step = row.get("step")
            if not step:
                continue
            for name, cell in row.items():
                if name in ("step", "epoch") or cell in (None, ""):
                    continue
                value = float(cell)
                if math.isfinite(value):
                    series.setdefault(name, []).append((int(float(step)), value))
    return series


def plot_training_curves(series: dict[str, list[tuple[int, float]]], path: str | os.PathLike) -> Path:
    """One figure of three panels against step: every ``train/*`` loss, the ``lr-*`` columns, the ``val/*`` AP
    metrics (undefined -1 left out). An empty panel says so."""
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(6 * len(_PANELS), 4.5))
    for ax, (title, wanted, lowest) in zip(axes, _PANELS):
        points = {name: sorted(p for p in series[name] if p[1] >= lowest) for name in series if wanted(name)}
        names = sorted(name for name, kept in points.items() if kept)
        for name in names:
            steps, values = zip(*points[name])
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=name)
        ax.set(xlabel="step", title=title)
        ax.grid(alpha=0.3)
        if names:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path)


def plot_per_class_ap(evaluation: dict[str, Any], path: str | os.PathLike) -> Path:
    """Bars of AP, AP50 and AP75 (in %) per class, one panel per IoU type of an ``evaluation.json`` record;
    classes without ground truth have no bar."""
    plt = require_matplotlib()
    kinds = evaluation["iou_types"]
    fig, axes = plt.subplots(len(kinds), 1, figsize=(8, 4 * len(kinds)), squeeze=False)
    width = 0.27
    for ax, (iou_type, entry) in zip(axes[:, 0], kinds.items()):
        rows = entry["per_class"]
        for offset, key in enumerate(("AP", "AP50", "AP75")):
            heights = [100 * row[key] if row[key] is not None else 0.0 for row in rows]
            ax.bar([i + (offset - 1) * width for i in range(len(rows))], heights, width, label=key)
        ax.set_xticks(range(len(rows)), [row["name"] for row in rows], rotation=30, ha="right")
        ax.set(ylabel="%", ylim=(0, 100), title=f"{iou_type}: per-class AP")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize="small")
    return save_figure(fig, path)


def analyze_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> list[Path]:
    """Write ``training_curves.png``, ``per_class_ap.png`` and ``pr_curves_<iou type>.png`` of a run directory
    into ``out`` (default ``RUN_DIR/analysis``); returns the written paths. Both input files are checked before
    anything is drawn."""
    import numpy as np

    from sasa_det.evaluation import plot_pr_curves, read_evaluation_json

    run = RunDirectory(run_dir)
    out = Path(out) if out is not None else run.analysis_dir
    series = read_metrics_csv(run.csv_metrics)
    evaluation = read_evaluation_json(run.evaluation_file)
    require_matplotlib()
    written = [
        plot_training_curves(series, out / "training_curves.png"),
        plot_per_class_ap(evaluation, out / "per_class_ap.png"),
    ]
    threshold = evaluation["pr_iou_threshold"]
    for iou_type, entry in evaluation["iou_types"].items():
        curves = {name: (np.asarray(c["recall"]), np.asarray(c["precision"])) for name, c in entry["pr_curves"].items()}
        written.append(
            plot_pr_curves(
                curves, out / f"pr_curves_{iou_type}.png", title=f"{iou_type} precision / recall at IoU {threshold}"
            )
        )
    return written
