"""The evaluation record (a run's ``evaluation.json``): per-class AP and precision/recall curves of a computed
``CocoEvaluator``, so that analysis and plots need no second COCOeval run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["evaluation_record", "read_evaluation_json", "write_evaluation_json"]


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def evaluation_record(evaluator, iou_threshold: float = 0.5) -> dict[str, Any]:
    """``{"pr_iou_threshold", "iou_types": {type: {"per_class": [rows], "pr_curves": {name: {"recall", "precision"}}}}}``
    of a computed evaluator. AP values are fractions, ``None`` for a class without ground truth; the curves
    are empty when nothing was evaluated (no predictions)."""
    record: dict[str, Any] = {"pr_iou_threshold": iou_threshold, "iou_types": {}}
    for iou_type in evaluator.iou_types:
        rows = [
            {key: _finite_or_none(value) if key in ("AP", "AP50", "AP75") else value for key, value in row.items()}
            for row in evaluator.per_class_ap(iou_type)
        ]
        try:
            curves = evaluator.pr_curves(iou_type, iou_threshold)
        except RuntimeError:  # no COCOeval ran (no predictions)
            curves = {}
        record["iou_types"][iou_type] = {
            "per_class": rows,
            "pr_curves": {
                name: {"recall": [float(r) for r in recall], "precision": [float(p) for p in precision]}
                for name, (recall, precision) in curves.items()
            },
        }
    return record


def write_evaluation_json(evaluator, path: str | os.PathLike, iou_threshold: float = 0.5) -> Path:
    """Write :func:`evaluation_record` of ``evaluator`` to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(evaluation_record(evaluator, iou_threshold), indent=1) + "\n")
    return path


def read_evaluation_json(path: str | os.PathLike) -> dict[str, Any]:
    """The record written by :func:`write_evaluation_json`; FileNotFoundError names the file and its writer."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: it is written at the end of a detection training run (tools/train.py) "
            "and by tools/eval.py in its output folder"
        )
    return json.loads(path.read_text())
