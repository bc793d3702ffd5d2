"""Speed of the COCO evaluation on synthetic detections, and whether its metrics agree with pycocotools'.

:func:`benchmark_eval` builds a ground truth of ``num_images`` images with a few boxes each, detections
that jitter, mislabel, drop and add boxes, and times, per backend, the whole evaluation a validation pass
runs: :meth:`CocoEvaluator.update` over batches of 8 images (the conversion of the detector outputs) and
:meth:`CocoEvaluator.compute` (the result dicts, loading them, COCOeval's evaluate, accumulate and
summarize). The baseline is pycocotools alone on the same detections, already as COCO result dicts
(``loadRes``, evaluate, accumulate, summarize): what a script that only runs pycocotools costs.
"""

from __future__ import annotations

import contextlib
import io
import time

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sasa_det.evaluation import COCO_BACKENDS, STAT_NAMES, CocoEvaluator

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


def _pycocotools_alone(coco: COCO, detections: list[dict]) -> tuple[float, list[float]]:
    """Seconds and the 12 stats of plain pycocotools (loadRes, evaluate, accumulate, summarize)."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco, coco.loadRes(detections), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return time.perf_counter() - start, [float(v) for v in coco_eval.stats]


def benchmark_eval(num_images: int = 5000, repeats: int = 1, seed: int = 0, batch_size: int = 8) -> list[dict]:
    """Time the whole bbox evaluation (update per batch + compute) per backend on the same synthetic detections.

    Returns one dict per backend, then the baseline ``"pycocotools alone"``: ``backend``, ``update_seconds``,
    ``compute_seconds``, ``seconds`` (their sum; medians of ``repeats``), ``time_ratio`` (vs pycocotools alone),
    ``metrics`` and ``max_metric_difference`` (vs pycocotools alone, over the 12 COCO stats).
    """
    coco, predictions = synthetic_coco(num_images, seed=seed)
    label_to_category = {c: c for c in coco.cats}
    image_ids = sorted(coco.imgs)
    rows = []
    for backend in COCO_BACKENDS:
        updates, computes = [], []
        for _ in range(repeats):
            evaluator = CocoEvaluator(coco, label_to_category, backend=backend)
            start = time.perf_counter()
            for i in range(0, len(predictions), batch_size):
                evaluator.update(predictions[i : i + batch_size], image_ids[i : i + batch_size])
            middle = time.perf_counter()
            metrics = evaluator.compute()
            updates.append(middle - start)
            computes.append(time.perf_counter() - middle)
        row = {"backend": backend, "update_seconds": float(np.median(updates))}
        row |= {"compute_seconds": float(np.median(computes)), "metrics": metrics}
        rows.append(row)
    detections = evaluator.detections_json("bbox")
    times, stats = zip(*(_pycocotools_alone(coco, [dict(d) for d in detections]) for _ in range(repeats)))
    base_metrics = {f"bbox/{name}": value for name, value in zip(STAT_NAMES, stats[0])}
    rows.append(
        {"backend": "pycocotools alone", "update_seconds": 0.0, "compute_seconds": float(np.median(times))}
        | {"metrics": base_metrics}
    )
    for row in rows:
        row["seconds"] = row["update_seconds"] + row["compute_seconds"]
        row["time_ratio"] = row["seconds"] / rows[-1]["compute_seconds"]
        row["max_metric_difference"] = max(abs(row["metrics"][k] - base_metrics[k]) for k in base_metrics)
    return rows


def format_eval_table(results: list[dict], num_images: int) -> str:
    """Markdown table of :func:`benchmark_eval` results."""
    lines = [
        f"| bbox evaluation of {num_images} images | update s | compute s | total s | × pycocotools alone | AP | "
        "max abs difference of 12 stats |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results:
        name = row["backend"] if row["backend"] == "pycocotools alone" else f"CocoEvaluator, {row['backend']}"
        lines.append(
            f"| {name} | {row['update_seconds']:.2f} | {row['compute_seconds']:.2f} | {row['seconds']:.2f} | "
            f"{row['time_ratio']:.2f} | {row['metrics']['bbox/AP']:.4f} | {row['max_metric_difference']:.1e} |"
        )
    return "\n".join(lines)
