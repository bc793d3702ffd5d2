"""A small COCO ground truth and detections built to hold the cases that break COCO evaluators.

:func:`hard_case` makes, from a seed, a ground-truth dict and bbox and segm result dicts with: polygons,
compressed RLE (``counts`` a string) and uncompressed RLE (``counts`` a list) ground truth, crowd regions,
an image without ground truth but with detections, an image with ground truth and no detection, an image
with neither, non-contiguous category ids, an image with more than 100 detections, objects of every COCO
area range, and scores on a coarse grid (ties within an image and across images).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

#: Non-contiguous category ids, as COCO's (1..90 with gaps).
CATEGORY_IDS = (3, 7, 20, 91)
#: Image indices with a role: no ground truth (but detections), no detections, > 100 detections, nothing.
NO_GROUND_TRUTH, NO_DETECTIONS, MANY_DETECTIONS, NOTHING = 0, 1, 2, 3
MANY = 150
#: how ground-truth masks are given: COCO polygons, RLE with ``counts`` a string, RLE with ``counts`` a list
SEGMENTATION_KINDS = ("polygon", "compressed", "uncompressed")


def _polygon(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float) -> list[float]:
    """A star-shaped polygon of 6-14 vertices around (cx, cy), flattened ``[x1, y1, x2, y2, ...]``."""
    count = int(rng.integers(6, 15))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    radii = rng.uniform(0.6, 1.0, count)
    xy = np.stack([cx + rx * radii * np.cos(angles), cy + ry * radii * np.sin(angles)], axis=1)
    return [round(float(v), 2) for v in xy.reshape(-1)]


def _object_size(rng: np.random.Generator, height: int, width: int) -> tuple[float, float]:
    """Half-sizes of a small (< 32²), medium or large (> 96²) object, each a third of the time."""
    kind = int(rng.integers(0, 3))
    low, high = ((3, 12), (20, 40), (55, min(height, width) / 2 - 2))[kind]
    return float(rng.uniform(low, high)), float(rng.uniform(low, high))


def _ground_truth_object(
    rng, height, width, image_id, category_id, number, kinds=SEGMENTATION_KINDS, crowd_share=0.15
) -> tuple[dict[str, Any], np.ndarray]:
    """One annotation (a polygon, compressed or uncompressed RLE, one of ``kinds``; a crowd region, as uncompressed
    RLE, ``crowd_share`` of the time) and its binary mask."""
    rx, ry = _object_size(rng, height, width)
    cx, cy = rng.uniform(rx, width - rx), rng.uniform(ry, height - ry)
    polygon = _polygon(rng, cx, cy, rx, ry)
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
    binary = mask_utils.decode(rle)
    crowd = rng.uniform() < crowd_share
    kind = "uncompressed" if crowd else kinds[int(rng.integers(0, len(kinds)))]
    if kind == "polygon":
        segmentation: Any = [polygon]
    elif kind == "compressed":
        segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    else:  # counts as run lengths, column-major, starting with zeros (COCO's crowd annotations)
        flat = binary.reshape(-1, order="F")
        changes = np.flatnonzero(np.diff(flat)) + 1
        bounds = np.concatenate([[0], changes, [flat.size]])
        counts = np.diff(bounds).tolist()
        if flat[0] == 1:
            counts = [0, *counts]
        segmentation = {"size": [height, width], "counts": counts}
    annotation = {
        "id": number,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segmentation,
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": int(crowd),
    }
    return annotation, binary


def _detection(rng, binary: np.ndarray, box: list[float], category_id: int, scores: np.ndarray) -> tuple:
    """A detection near a ground-truth object: its box jittered and its mask shifted."""
    height, width = binary.shape
    x, y, w, h = box
    jitter = rng.normal(scale=0.12, size=4) * np.array([w, h, w, h])
    det_box = [
        float(x + jitter[0]),
        float(y + jitter[1]),
        float(max(w + jitter[2], 1.0)),
        float(max(h + jitter[3], 1.0)),
    ]
    shifted = np.roll(binary, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
    return det_box, shifted, category_id, float(rng.choice(scores))


def hard_case(
    seed: int = 0,
    num_images: int = 12,
    kinds: tuple[str, ...] = SEGMENTATION_KINDS,
    crowd_share: float = 0.15,
    score_levels: int | None = 10,
) -> tuple[dict[str, Any], list[dict], list[dict]]:
    """``(ground truth dict, bbox results, segm results)``; see the module docstring for what they hold.

    Args:
        kinds: the forms ground-truth masks take (non-crowd), among :data:`SEGMENTATION_KINDS`.
        crowd_share: the share of ground truths that are crowd regions.
        score_levels: scores take this many values (ties); None: uniform in (0, 1) (no ties).
    """
    rng = np.random.default_rng(seed)
    # a coarse grid gives many ties; a fine one practically none
    scores = np.round(np.linspace(0.1, 1.0, score_levels), 2) if score_levels else rng.uniform(0.01, 1.0, 100_000)
    images, annotations, bbox, segm = [], [], [], []
    for index in range(num_images):
        image_id = 1000 + 7 * index  # not contiguous, not starting at 1
        height, width = int(rng.integers(140, 320)), int(rng.integers(160, 400))
        images.append({"id": image_id, "height": height, "width": width, "file_name": f"{image_id}.jpg"})
        objects = []
        if index not in (NO_GROUND_TRUTH, NOTHING):
            for _ in range(int(rng.integers(2, 9))):
                category_id = int(rng.choice(CATEGORY_IDS))
                annotation, binary = _ground_truth_object(
                    rng, height, width, image_id, category_id, len(annotations) + 1, kinds, crowd_share
                )
                annotations.append(annotation)
                objects.append((annotation, binary))
        if index in (NO_DETECTIONS, NOTHING):
            continue
        found = []
        for annotation, binary in objects:
            if rng.uniform() < 0.85:
                category_id = annotation["category_id"] if rng.uniform() < 0.85 else int(rng.choice(CATEGORY_IDS))
                found.append(_detection(rng, binary, annotation["bbox"], category_id, scores))
        extra = MANY - len(found) if index == MANY_DETECTIONS else int(rng.integers(1, 5))
        for _ in range(extra):
            source = objects[int(rng.integers(len(objects)))] if objects and rng.uniform() < 0.5 else None
            if source is not None:  # a near-duplicate of a ground truth
                found.append(_detection(rng, source[1], source[0]["bbox"], int(rng.choice(CATEGORY_IDS)), scores))
            else:  # a detection of nothing
                _, binary = _ground_truth_object(rng, height, width, image_id, 0, 0)
                box = [float(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(binary)))]
                found.append(_detection(rng, binary, box, int(rng.choice(CATEGORY_IDS)), scores))
        for det_box, det_mask, category_id, score in found:
            bbox.append({"image_id": image_id, "category_id": category_id, "bbox": det_box, "score": score})
            rle = mask_utils.encode(np.asfortranarray(det_mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            segm.append({"image_id": image_id, "category_id": category_id, "segmentation": rle, "score": score})
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in CATEGORY_IDS]
    ground_truth = {"images": images, "annotations": annotations, "categories": categories}
    return ground_truth, bbox, segm
