"""Speed of the COCO evaluation backends on synthetic detections, and whether their metrics agree.

:func:`benchmark_eval` builds a ground truth of ``num_images`` images with a few boxes each, detections
that jitter, mislabel, drop and add boxes, feeds them once to a :class:`CocoEvaluator` per backend and
times :meth:`CocoEvaluator.compute` (loading the results, COCOeval's evaluate, accumulate and summarize).
"""

from __future__ import annotations

import contextlib
import io
import time

import numpy as np
import torch
from pycocotools.coco import COCO

from sasa_det.evaluation import COCO_BACKENDS, CocoEvaluator

__all__ = ["benchmark_eval", "format_eval_table", "synthetic_coco"]


def synthetic_coco(
    num_images: int, num_classes: int = 20, seed: int = 0, size: tuple[int, int] = (480, 640)
) -> tuple[COCO, list[dict[str, torch.Tensor]]]:
    """A ground truth ``COCO`` and per-image detections in :meth:`CocoEvaluator.update`'s format.

    Each image has 1-10 boxes of random classes (ids 1..``num_classes``, label = id); detections are the
    boxes jittered by up to 10 % of their size, 10 % with a wrong label, 10 % dropped, plus 0-5 false
    positives, all with random scores.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    images, annotations, predictions = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "height": height, "width": width, "file_name": f"{image_id}.jpg"})
        count = int(rng.integers(1, 11))
        wh = rng.uniform(8, 200, size=(count, 2))
        xy = rng.uniform(0, 1, size=(count, 2)) * (np.array([width, height]) - wh)
        labels = rng.integers(1, num_classes + 1, size=count)
        for (x, y), (w, h), label in zip(xy, wh, labels):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
        keep = rng.uniform(size=count) > 0.1
        boxes = np.concatenate([xy, xy + wh], axis=1)[keep]
        boxes = boxes + rng.normal(scale=0.05, size=boxes.shape) * np.tile(wh[keep], 2)
        det_labels = np.where(
            rng.uniform(size=keep.sum()) < 0.1, rng.integers(1, num_classes + 1, keep.sum()), labels[keep]
        )
        extra = int(rng.integers(0, 6))
        extra_xy = rng.uniform(0, 1, size=(extra, 2)) * np.array([width - 50, height - 50])
        extra_boxes = np.concatenate([extra_xy, extra_xy + rng.uniform(10, 50, size=(extra, 2))], axis=1)
        predictions.append(
            {
                "boxes": torch.tensor(np.concatenate([boxes, extra_boxes]), dtype=torch.float32),
                "scores": torch.tensor(rng.uniform(0.05, 1.0, size=len(boxes) + extra), dtype=torch.float32),
                "labels": torch.tensor(
                    np.concatenate([det_labels, rng.integers(1, num_classes + 1, extra)]), dtype=torch.int64
                ),
            }
        )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, predictions


def benchmark_eval(num_images: int = 5000, repeats: int = 1, seed: int = 0) -> list[dict]:
    """Time :meth:`CocoEvaluator.compute` (bbox) per backend on the same synthetic detections.

    Returns one dict per backend: ``backend``, ``seconds`` (median of ``repeats``), ``time_ratio`` (vs
    pycocotools), ``metrics`` and ``max_metric_difference`` (vs pycocotools, over the 12 COCO stats).
    """
    coco, predictions = synthetic_coco(num_images, seed=seed)
    label_to_category = {c: c for c in coco.cats}
    image_ids = sorted(coco.imgs)
    rows = {}
    for backend in COCO_BACKENDS:
        evaluator = CocoEvaluator(coco, label_to_category, backend=backend)
        evaluator.update(predictions, image_ids)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            metrics = evaluator.compute()
            times.append(time.perf_counter() - start)
        rows[backend] = {"backend": backend, "seconds": float(np.median(times)), "metrics": metrics}
    base = rows["pycocotools"]
    for row in rows.values():
        row["time_ratio"] = row["seconds"] / base["seconds"]
        row["max_metric_difference"] = max(abs(row["metrics"][k] - base["metrics"][k]) for k in base["metrics"])
    return list(rows.values())


def format_eval_table(results: list[dict], num_images: int) -> str:
    """Markdown table of :func:`benchmark_eval` results."""
    lines = [
        f"| backend | bbox COCOeval on {num_images} images, s | × pycocotools | AP | AP50 | max |Δ| of 12 stats |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results:
        metrics = row["metrics"]
        lines.append(
            f"| {row['backend']} | {row['seconds']:.2f} | {row['time_ratio']:.2f} | {metrics['bbox/AP']:.4f} | "
            f"{metrics['bbox/AP50']:.4f} | {row['max_metric_difference']:.1e} |"
        )
    return "\n".join(lines)
