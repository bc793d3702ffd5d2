"""Speed and memory of the COCO evaluation on synthetic detections, and whether its metrics are pycocotools'.

:func:`benchmark_eval` builds a ground truth of ``num_images`` images with a few objects each and detections
that jitter, mislabel, drop and add boxes, then times, on the same detections:

* the anchors, each library alone on the COCO result dicts (the results JSON, already in memory) with its
  ground truth already loaded: ``loadRes``, evaluate, accumulate, summarize;
* the evaluator with each backend, the whole work of a validation pass: :meth:`CocoEvaluator.update` over
  batches of 8 images (the conversion of the detector outputs) and :meth:`CocoEvaluator.compute` (the
  backend's ground truth built on first use, the detections handed over, evaluate, accumulate, summarize).

The same for masks (``segm``) on ``segm_images`` images whose ground truth mixes polygons, compressed RLE
and crowd regions, and whose detections carry masks as Mask R-CNN returns them: float32 probabilities
[N, 1, H, W] at the image size, made batch by batch outside the timed region. Last, in a child process,
the peak memory of evaluating ``memory_images`` such predictions with the default backend.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import multiprocessing
import time

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sasa_det.evaluation import STAT_NAMES, CocoEvaluator

__all__ = ["ANCHORS", "benchmark_eval", "format_eval_report", "mask_memory", "prediction_masks", "synthetic_coco"]

#: the libraries timed alone, as the anchors of the table
ANCHORS = ("pycocotools", "faster_coco_eval", "hotcoco")
#: the evaluator's backends timed, the default first
EVALUATOR_BACKENDS = ("auto", "faster_coco_eval", "pycocotools")
BATCH = 8
MASK_INSIDE = 0.8  # probability inside a detection's ellipse (0 outside): > 0.5, the mask threshold


def _ellipse_polygon(x: float, y: float, w: float, h: float, vertices: int = 16) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    xy = np.stack([x + w / 2 * (1 + np.cos(angles)), y + h / 2 * (1 + np.sin(angles))], axis=1)
    return [round(float(v), 2) for v in xy.reshape(-1)]


def _annotation(number, image_id, label, box, with_masks, rng, size) -> dict:
    x, y, w, h = (float(v) for v in box)
    annotation = {"id": number, "image_id": image_id, "category_id": int(label), "bbox": [x, y, w, h]}
    annotation |= {"area": w * h, "iscrowd": 0}
    if with_masks:  # an ellipse in the box: a polygon, 20 % as compressed RLE, 5 % a crowd region
        polygon = _ellipse_polygon(x, y, w, h)
        annotation["segmentation"] = [polygon]
        annotation["area"] = math.pi * w * h / 4
        kind = rng.uniform()
        if kind < 0.25:
            rle = mask_utils.merge(mask_utils.frPyObjects([polygon], *size))
            annotation["segmentation"] = {"size": list(size), "counts": rle["counts"].decode("ascii")}
            annotation["iscrowd"] = int(kind < 0.05)
    return annotation


def synthetic_coco(
    num_images: int,
    num_classes: int = 20,
    seed: int = 0,
    size: tuple[int, int] = (480, 640),
    with_masks: bool = False,
) -> tuple[COCO, list[dict[str, torch.Tensor]]]:
    """A ground truth ``COCO`` and per-image detections in :meth:`CocoEvaluator.update`'s format (without
    masks: :func:`prediction_masks` makes them batch by batch).

    Each image has 1-10 boxes of random classes (ids 1..``num_classes``, label = id); detections are the
    boxes jittered by up to 10 % of their size, 10 % with a wrong label, 10 % dropped, plus 0-5 false
    positives, all with random scores. ``with_masks``: the ground truth has ellipse segmentations.
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
        for box, label in zip(np.concatenate([xy, wh], axis=1), labels):
            annotations.append(_annotation(len(annotations) + 1, image_id, label, box, with_masks, rng, size))
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


def prediction_masks(prediction: dict[str, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Mask R-CNN-like masks of one image's detections: float32 [N, 1, H, W], :data:`MASK_INSIDE` in the
    ellipse inscribed in each box, 0 elsewhere."""
    height, width = size
    boxes = prediction["boxes"].clamp(min=0)
    masks = torch.zeros(len(boxes), 1, height, width)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        top, bottom, left, right = int(y1), min(int(math.ceil(y2)), height), int(x1), min(int(math.ceil(x2)), width)
        if bottom <= top or right <= left:
            continue
        ys = (torch.arange(top, bottom) + 0.5 - (y1 + y2) / 2) / max((y2 - y1) / 2, 0.5)
        xs = (torch.arange(left, right) + 0.5 - (x1 + x2) / 2) / max((x2 - x1) / 2, 0.5)
        masks[i, 0, top:bottom, left:right] = MASK_INSIDE * (ys[:, None] ** 2 + xs[None, :] ** 2 <= 1)
    return masks


def _with_masks(batch: list[dict], size: tuple[int, int]) -> list[dict]:
    return [dict(p, masks=prediction_masks(p, size)) for p in batch]


def _run_evaluator(coco, predictions, backend, iou_type, size, after_batch=None) -> tuple[float, float, CocoEvaluator]:
    """``(update seconds, compute seconds, evaluator)``; masks are made per batch outside the timing, and
    ``after_batch()`` is called, untimed, after each update (the batch still alive)."""
    label_to_category = {c: c for c in coco.cats}
    image_ids = sorted(coco.imgs)
    evaluator = CocoEvaluator(coco, label_to_category, iou_types=(iou_type,), backend=backend)
    update = 0.0
    for i in range(0, len(predictions), BATCH):
        batch = predictions[i : i + BATCH]
        if iou_type == "segm":
            batch = _with_masks(batch, size)
        start = time.perf_counter()
        evaluator.update(batch, image_ids[i : i + BATCH])
        update += time.perf_counter() - start
        if after_batch is not None:
            after_batch()
    start = time.perf_counter()
    evaluator.compute()
    compute = time.perf_counter() - start
    if after_batch is not None:
        after_batch()
    return update, compute, evaluator


def _anchor(library: str, coco: COCO, detections: list[dict], iou_type: str) -> tuple[float, np.ndarray]:
    """Seconds and the 12 stats of ``library`` alone: loadRes, evaluate, accumulate, summarize (ground truth
    loaded beforehand)."""
    with contextlib.redirect_stdout(io.StringIO()):
        if library == "pycocotools":
            from pycocotools.cocoeval import COCOeval as evaluator_class

            ground_truth, options = coco, {}
        elif library == "faster_coco_eval":
            import faster_coco_eval

            ground_truth = faster_coco_eval.COCO(copy.deepcopy(coco.dataset))
            evaluator_class, options = faster_coco_eval.COCOeval_faster, {"print_function": print}
        else:
            import hotcoco

            ground_truth, evaluator_class, options = hotcoco.COCO(coco.dataset), hotcoco.COCOeval, {}
        detections = copy.deepcopy(detections)
        start = time.perf_counter()
        coco_eval = evaluator_class(ground_truth, ground_truth.loadRes(detections), iou_type, **options)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        seconds = time.perf_counter() - start
    return seconds, np.asarray(coco_eval.stats, dtype=np.float64)[:12]


def _benchmark_type(coco, predictions, iou_type, repeats, size) -> list[dict]:
    """Rows of the anchors, then of the evaluator per backend, on the same detections."""
    runs = {
        b: [_run_evaluator(coco, predictions, b, iou_type, size) for _ in range(repeats)] for b in EVALUATOR_BACKENDS
    }
    detections = runs["pycocotools"][0][2].detections_json(iou_type)
    rows = []
    for library in ANCHORS:
        times, stats = zip(*(_anchor(library, coco, detections, iou_type) for _ in range(repeats)))
        rows.append({"name": library, "kind": "anchor", "seconds": float(np.median(times)), "stats": stats[0]})
    for backend, results in runs.items():
        evaluator = results[0][2]
        stats = np.array([evaluator.metrics[f"{iou_type}/{n}"] for n in STAT_NAMES])
        update, compute = (float(np.median([r[k] for r in results])) for k in (0, 1))
        rows.append(
            {"name": backend, "kind": "evaluator", "backend": evaluator.backends[iou_type], "stats": stats}
            | {"update_seconds": update, "compute_seconds": compute, "seconds": update + compute}
        )
    reference = rows[0]["stats"]
    evaluator_pycocotools = next(r for r in rows if r["kind"] == "evaluator" and r["name"] == "pycocotools")
    for row in rows:
        row["time_ratio"] = row["seconds"] / rows[0]["seconds"]
        row["evaluator_ratio"] = row["seconds"] / evaluator_pycocotools["seconds"]
        row["max_stat_difference"] = float(np.abs(row["stats"] - reference).max())
        row["stats"] = [float(v) for v in row["stats"]]
    return rows


def _resident_bytes() -> int:
    """The process's resident memory now (Linux)."""
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mask_memory(num_images: int, seed: int = 0) -> dict:
    """The peak growth of resident memory while ``num_images`` predictions with masks are evaluated (default
    backend; sampled after every batch and after compute), what the evaluator keeps, and what the split's
    binary masks would take. :func:`benchmark_eval` runs it in a fresh process."""
    size = (480, 640)
    coco, predictions = synthetic_coco(num_images, seed=seed, size=size, with_masks=True)
    before = _resident_bytes()
    samples = [before]
    update, compute, evaluator = _run_evaluator(
        coco, predictions, "auto", "segm", size, after_batch=lambda: samples.append(_resident_bytes())
    )
    return {
        "images": num_images,
        "detections": len(evaluator.detections_json("segm")),
        "masks_total": sum(len(p["scores"]) for p in predictions),
        "peak_growth_mib": (max(samples) - before) / 2**20,
        "final_growth_mib": (samples[-1] - before) / 2**20,
        "kept_mib": evaluator.kept_bytes() / 2**20,
        "binary_split_mib": sum(len(p["scores"]) for p in predictions) * size[0] * size[1] / 2**20,
        "batch_float_mib": BATCH
        * float(np.mean([len(p["scores"]) for p in predictions]))
        * size[0]
        * size[1]
        * 4
        / 2**20,
        "seconds": update + compute,
        "backend": evaluator.backends["segm"],
    }


def _memory_child(num_images: int, seed: int, queue) -> None:
    torch.set_num_threads(1)
    queue.put(mask_memory(num_images, seed))


def _memory(num_images: int, seed: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_child, args=(num_images, seed, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def benchmark_eval(
    num_images: int = 5000, segm_images: int = 300, memory_images: int = 5000, repeats: int = 1, seed: int = 0
) -> dict:
    """Time bbox evaluation on ``num_images`` images and segm on ``segm_images`` (0: skipped), each anchor
    and each evaluator backend on the same detections; measure the memory of evaluating ``memory_images``
    predictions with masks (0: skipped).

    Returns ``{"bbox": rows, "segm": rows, "memory": dict or None, "sets": {type: (images, gt, detections)}}``;
    a row has ``name``, ``kind`` (anchor / evaluator), ``seconds`` (the evaluator's: ``update_seconds`` +
    ``compute_seconds``), ``time_ratio`` (vs pycocotools alone), ``evaluator_ratio`` (vs the evaluator's
    pycocotools backend), ``stats`` and ``max_stat_difference`` (vs pycocotools alone).
    """
    results: dict = {"sets": {}, "memory": None}
    for iou_type, count in (("bbox", num_images), ("segm", segm_images)):
        if count <= 0:
            results[iou_type] = []
            continue
        size = (480, 640)
        coco, predictions = synthetic_coco(count, seed=seed, size=size, with_masks=iou_type == "segm")
        results[iou_type] = _benchmark_type(coco, predictions, iou_type, repeats, size)
        detections = sum(int((p["scores"] >= 0.05).sum()) for p in predictions)
        results["sets"][iou_type] = (count, len(coco.anns), detections)
    if memory_images > 0:
        results["memory"] = _memory(memory_images, seed)
    return results


def _table(rows: list[dict], iou_type: str, sizes: tuple[int, int, int]) -> list[str]:
    images, ground_truths, detections = sizes
    lines = [
        f"| {images} images, {ground_truths} gt, {detections} detections, {iou_type} | time s | vs pycocotools | "
        "vs evaluator's pycocotools backend | stats vs pycocotools (max abs difference) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if row["kind"] == "anchor":
            name = f"{row['name']} alone (loadRes + evaluate + accumulate + summarize)"
        else:
            default = f"default: auto → {row['backend']}, " if row["name"] == "auto" else ""
            name = (
                f"sasa_det evaluator, {default}{row['backend']} backend "
                f"(update {row['update_seconds']:.2f} s + compute {row['compute_seconds']:.2f} s)"
            )
        ratio = "—" if row["kind"] == "anchor" else f"{row['evaluator_ratio']:.3f}×"
        lines.append(
            f"| {name} | {row['seconds']:.2f} | {row['time_ratio']:.3f}× | {ratio} | {row['max_stat_difference']:.1e} |"
        )
    return lines


def format_eval_report(results: dict) -> str:
    """Markdown tables of :func:`benchmark_eval`: bbox, segm, and the memory line."""
    lines: list[str] = []
    for iou_type in ("bbox", "segm"):
        if results[iou_type]:
            lines += _table(results[iou_type], iou_type, results["sets"][iou_type]) + [""]
    default = next((r for r in results["bbox"] if r["name"] == "auto"), None)
    if default is not None:
        lines.append(
            f"Default backend ({default['backend']}), update + compute on the bbox set: "
            f"{default['evaluator_ratio']:.3f}× the evaluator's pycocotools backend in the same run (target ≤ 0.05×)."
        )
    memory = results["memory"]
    if memory:
        lines.append(
            f"Memory, {memory['images']} images with {memory['masks_total']} Mask R-CNN-sized masks (float32 "
            f"[N, 1, 480, 640] probabilities, batches of {BATCH}), {memory['backend']} backend: resident memory "
            f"grows by {memory['peak_growth_mib']:.0f} MiB at most, {memory['final_growth_mib']:.0f} MiB after compute (one batch of masks as float32 is {memory['batch_float_mib']:.0f} MiB); "
            f"the evaluator keeps {memory['kept_mib']:.1f} MiB of RLEs and arrays for {memory['detections']} detections, "
            f"where the split's binary masks would take {memory['binary_split_mib']:.0f} MiB; "
            f"update + compute {memory['seconds']:.1f} s."
        )
    return "\n".join(lines)
