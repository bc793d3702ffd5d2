"""Where a detector goes wrong: a confusion matrix over classes + background, and false positives by kind.

Both read COCO ground truth (the annotation file's dict) and COCO results (``detections_bbox.json``), and
consider the detections scoring at least ``score_threshold``; crowd annotations are left out.

**Confusion matrix** (as ultralytics and mmdetection's ``confusion_matrix.py`` draw it), ``(K + 1) × (K + 1)``,
rows the ground-truth class, columns the predicted class, the last row and column *background*. In each image,
ground-truth boxes and detections are paired one-to-one regardless of class, greedily by decreasing IoU among
pairs with IoU ≥ ``iou_threshold``: a pair adds 1 at ``[gt class, predicted class]`` (the diagonal when the
classes agree), an unpaired ground truth 1 at ``[gt class, background]`` (missed), an unpaired detection 1 at
``[background, predicted class]`` (a detection of nothing).

**False positives by kind** (after the COCO analyze / TIDE breakdown), per predicted class. Detections are
taken in decreasing score order per image; each is

* a true positive: a ground truth of its class at IoU ≥ ``iou_threshold`` that no higher-scored detection took;
* *duplicate*: such a ground truth exists but a higher-scored detection of its class already took it;
* *localisation*: its best IoU with a ground truth of its class is in [``background_iou``, ``iou_threshold``);
* *confusion*: not the above, and a ground truth of another class overlaps it at IoU ≥ ``background_iou``;
* *background*: IoU below ``background_iou`` with every ground truth (TIDE's 0.1).

``missed`` counts each class's ground truths that no true positive took.

hotcoco computes both too (``COCOeval.confusion_matrix``, ``tide_errors``); ``tests/test_evaluation_hotcoco_
diagnostics.py`` compares them with these on the same detections. Its matrix pairs by decreasing score, not IoU,
so the two differ where a ground truth has several detections at IoU ≥ 0.5; its TIDE counts agree on background
and localisation errors, but TIDE ranks a class error before a duplicate and counts as missed only the objects
no false positive explains. This module keeps the per-class table and the matrix drawn as ultralytics does.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from sasa_det.optional_matplotlib import require_matplotlib, save_figure

__all__ = [
    "ERROR_KINDS",
    "ErrorAnalysis",
    "analyze_error_files",
    "analyze_errors",
    "confusion_matrix",
    "false_positive_kinds",
    "plot_confusion_matrix",
    "write_error_analysis",
]

logger = logging.getLogger(__name__)

#: Kinds of false positive, in table order.
ERROR_KINDS = ("localisation", "confusion", "background", "duplicate")
#: Below this IoU with every ground truth a false positive is background (TIDE's background threshold).
BACKGROUND_IOU = 0.1


def _xyxy(boxes: Sequence[Sequence[float]]) -> torch.Tensor:
    """COCO ``[x, y, w, h]`` boxes as an ``[N, 4]`` float64 x1y1x2y2 tensor."""
    t = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], dim=1)


@dataclass
class _Image:
    """One image's ground truth and (thresholded, score-sorted) detections, labels as category indices."""

    gt_boxes: torch.Tensor
    gt_classes: list[int]
    det_boxes: torch.Tensor
    det_classes: list[int]


def _images(
    ground_truth: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], score_threshold: float
) -> tuple[list[_Image], list[int]]:
    """Group annotations and detections by image; returns the images and the category ids in matrix order.

    Raises ValueError naming a detection whose image id or category id the ground truth does not know.
    """
    category_ids = sorted(int(c["id"]) for c in ground_truth.get("categories", []))
    index = {cid: i for i, cid in enumerate(category_ids)}
    image_ids = [int(image["id"]) for image in ground_truth.get("images", [])]
    gts: dict[int, list] = defaultdict(list)
    for ann in ground_truth.get("annotations", []):
        if not ann.get("iscrowd", 0):
            gts[int(ann["image_id"])].append(ann)
    dets: dict[int, list] = defaultdict(list)
    known_images = set(image_ids)
    for number, det in enumerate(detections):
        if int(det["image_id"]) not in known_images:
            raise ValueError(f"detection {number} has image_id {det['image_id']}, which the ground truth lacks")
        if int(det["category_id"]) not in index:
            raise ValueError(
                f"detection {number} has category_id {det['category_id']}; the ground truth's are {category_ids}"
            )
        if float(det["score"]) >= score_threshold:
            dets[int(det["image_id"])].append(det)
    images = []
    for image_id in image_ids:
        found = sorted(dets[image_id], key=lambda d: -float(d["score"]))
        images.append(
            _Image(
                _xyxy([a["bbox"] for a in gts[image_id]]),
                [index[int(a["category_id"])] for a in gts[image_id]],
                _xyxy([d["bbox"] for d in found]),
                [index[int(d["category_id"])] for d in found],
            )
        )
    return images, category_ids


def _greedy_pairs(iou: torch.Tensor, threshold: float) -> list[tuple[int, int]]:
    """One-to-one ``(gt, detection)`` pairs with IoU ≥ ``threshold``, taken by decreasing IoU."""
    gt_index, det_index = torch.nonzero(iou >= threshold, as_tuple=True)
    order = iou[gt_index, det_index].argsort(descending=True, stable=True)
    used_gt, used_det, pairs = set(), set(), []
    for g, d in zip(gt_index[order].tolist(), det_index[order].tolist()):
        if g not in used_gt and d not in used_det:
            used_gt.add(g)
            used_det.add(d)
            pairs.append((g, d))
    return pairs


def confusion_matrix(images: Sequence[_Image], num_classes: int, iou_threshold: float = 0.5) -> np.ndarray:
    """``(K + 1, K + 1)`` int64 counts, rows ground truth, columns prediction, index K background."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for image in images:
        pairs = _greedy_pairs(box_iou(image.gt_boxes, image.det_boxes), iou_threshold)
        for g, d in pairs:
            matrix[image.gt_classes[g], image.det_classes[d]] += 1
        paired_gt, paired_det = {g for g, _ in pairs}, {d for _, d in pairs}
        for g, cls in enumerate(image.gt_classes):
            if g not in paired_gt:
                matrix[cls, num_classes] += 1
        for d, cls in enumerate(image.det_classes):
            if d not in paired_det:
                matrix[num_classes, cls] += 1
    return matrix


def false_positive_kinds(
    images: Sequence[_Image], num_classes: int, iou_threshold: float = 0.5, background_iou: float = BACKGROUND_IOU
) -> dict[str, np.ndarray]:
    """Per predicted class: ``detections``, ``true_positives``, each of :data:`ERROR_KINDS` and ``missed``
    (ground truths of the class no true positive took), each an int64 ``[K]`` array."""
    counts = {name: np.zeros(num_classes, dtype=np.int64) for name in ("detections", "true_positives", *ERROR_KINDS)}
    ground_truths = np.zeros(num_classes, dtype=np.int64)
    for image in images:
        iou = box_iou(image.det_boxes, image.gt_boxes)  # [D, G]
        gt_classes = torch.tensor(image.gt_classes, dtype=torch.long)
        taken: set[int] = set()
        for cls in image.gt_classes:
            ground_truths[cls] += 1
        for d, cls in enumerate(image.det_classes):  # decreasing score
            counts["detections"][cls] += 1
            same = gt_classes == cls
            same_iou = iou[d].masked_fill(~same, -1.0)
            other_iou = iou[d].masked_fill(same, -1.0)
            free = [g for g in torch.nonzero(same_iou >= iou_threshold).flatten().tolist() if g not in taken]
            if free:
                taken.add(max(free, key=lambda g: float(same_iou[g])))
                counts["true_positives"][cls] += 1
            elif len(same_iou) and float(same_iou.max()) >= iou_threshold:
                counts["duplicate"][cls] += 1
            elif len(same_iou) and float(same_iou.max()) >= background_iou:
                counts["localisation"][cls] += 1
            elif len(other_iou) and float(other_iou.max()) >= background_iou:
                counts["confusion"][cls] += 1
            else:
                counts["background"][cls] += 1
    counts["missed"] = ground_truths - counts["true_positives"]
    return counts


@dataclass
class ErrorAnalysis:
    """The confusion matrix and the false positives by kind of one set of detections."""

    class_names: list[str]
    matrix: np.ndarray
    kinds: dict[str, np.ndarray]
    iou_threshold: float
    score_threshold: float

    def kinds_table(self) -> str:
        """The per-class false-positive table as Markdown."""
        columns = ("detections", "true_positives", *ERROR_KINDS, "missed")
        lines = [
            "| class | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
            "| --- |" + " ---: |" * len(columns),
        ]
        for i, name in enumerate(self.class_names):
            lines.append(f"| {name} | " + " | ".join(str(int(self.kinds[c][i])) for c in columns) + " |")
        lines.append("| all | " + " | ".join(str(int(self.kinds[c].sum())) for c in columns) + " |")
        return "\n".join(lines)


def analyze_errors(
    ground_truth: Mapping[str, Any],
    detections: Sequence[Mapping[str, Any]],
    iou_threshold: float = 0.5,
    score_threshold: float = 0.3,
) -> ErrorAnalysis:
    """Confusion matrix and false positives by kind of COCO ``detections`` against the COCO dict
    ``ground_truth`` (see the module docstring)."""
    images, category_ids = _images(ground_truth, detections, score_threshold)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in ground_truth.get("categories", [])}
    k = len(category_ids)
    return ErrorAnalysis(
        [names[c] for c in category_ids],
        confusion_matrix(images, k, iou_threshold),
        false_positive_kinds(images, k, iou_threshold),
        iou_threshold,
        score_threshold,
    )


def _read_json(path: Path, what: str, fix: str) -> Any:
    import json

    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; {fix}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err}); {fix}") from err


def analyze_error_files(
    ann_file: str | os.PathLike,
    predictions_file: str | os.PathLike,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.3,
) -> ErrorAnalysis:
    """:func:`analyze_errors` of a COCO annotation file and a COCO results file (``detections_bbox.json`` of
    ``tools/eval.py``, or ``detections.json`` of ``tools/predict.py`` on the same images).

    Raises FileNotFoundError / ValueError naming the file (or the detection) and what to give instead.
    """
    ground_truth = _read_json(Path(ann_file), "annotation file", "give the COCO annotation json of the evaluated split")
    predictions = _read_json(
        Path(predictions_file), "predictions file", "give detections_bbox.json written by tools/eval.py"
    )
    if not isinstance(ground_truth, dict) or "images" not in ground_truth or "categories" not in ground_truth:
        raise ValueError(f"annotation file {ann_file} is not a COCO annotation dict (needs 'images', 'categories')")
    if not isinstance(predictions, list):
        raise ValueError(f"predictions file {predictions_file} is not a list of COCO results")
    for number, det in enumerate(predictions):
        missing = {"image_id", "category_id", "bbox", "score"} - set(det)
        if missing:
            raise ValueError(f"predictions file {predictions_file}: detection {number} lacks {sorted(missing)}")
    try:
        return analyze_errors(ground_truth, predictions, iou_threshold, score_threshold)
    except ValueError as err:
        raise ValueError(f"predictions file {predictions_file} against {ann_file}: {err}") from err


def plot_confusion_matrix(analysis: ErrorAnalysis, path: str | os.PathLike) -> Path:
    """Draw the matrix with its counts, each row coloured by its share of the row's ground truth."""
    plt = require_matplotlib()
    labels = [*analysis.class_names, "background"]
    matrix = analysis.matrix
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 2.0 + 0.55 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(len(labels)):
        for col in range(len(labels)):
            if matrix[row, col]:
                colour = "white" if shares[row, col] > 0.6 else "black"
                ax.text(col, row, str(int(matrix[row, col])), ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="ground truth")
    ax.set_title(f"confusion matrix (IoU ≥ {analysis.iou_threshold:g}, score ≥ {analysis.score_threshold:g})")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the row")
    return save_figure(fig, path, dpi=120)


def write_error_analysis(analysis: ErrorAnalysis, out: str | os.PathLike) -> list[Path]:
    """``confusion_matrix.csv``, ``false_positives.md`` and (with matplotlib) ``confusion_matrix.png`` in ``out``.

    Returns the written paths; the PNG is skipped, not an error, when matplotlib is missing.
    """
    from sasa_det.optional_matplotlib import MissingMatplotlib

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = [*analysis.class_names, "background"]
    csv_path = out / "confusion_matrix.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ground truth \\ predicted", *labels])
        for label, row in zip(labels, analysis.matrix):
            writer.writerow([label, *(int(v) for v in row)])
    table_path = out / "false_positives.md"
    table_path.write_text(
        f"False positives by kind (IoU ≥ {analysis.iou_threshold:g}, score ≥ {analysis.score_threshold:g})\n\n"
        + analysis.kinds_table()
        + "\n"
    )
    written = [csv_path, table_path]
    try:
        written.append(plot_confusion_matrix(analysis, out / "confusion_matrix.png"))
    except MissingMatplotlib as err:
        logger.warning("confusion_matrix.png not drawn: %s", err)
    return written
