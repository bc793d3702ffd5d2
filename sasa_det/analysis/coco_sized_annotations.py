"""A generated annotation file of COCO train 2017's size, for measuring the data pipeline at full scale.

:func:`write_coco_sized_split` writes ``annotations.json`` with, by default, COCO train 2017's counts: 118 287
images in COCO's mix of sizes (an approximation of its most frequent sizes, about 70 % landscape), 860 001
instances over COCO's 80 category ids (1..90 with gaps), about 1 % of them crowd regions as uncompressed RLE
(as COCO stores them), the others single polygons of 4 to 200 vertices (mean about 28, two decimals, as COCO
writes them) inside their box; about 1 % of the images have no annotation. The images are links to one small
JPEG per distinct size, so the image check passes and loading an image costs little.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["COCO_CATEGORY_IDS", "COCO_SIZE_MIX", "write_coco_sized_split"]

#: COCO 2017's 80 category ids (1..90 with gaps).
COCO_CATEGORY_IDS = tuple(
    [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91)]
)
#: (width, height, fraction of the images): an approximation of COCO train's most frequent sizes.
COCO_SIZE_MIX = (
    (640, 480, 0.42),
    (640, 427, 0.22),
    (480, 640, 0.12),
    (640, 426, 0.06),
    (427, 640, 0.05),
    (500, 375, 0.05),
    (640, 360, 0.03),
    (640, 640, 0.03),
    (375, 500, 0.02),
)


def _instance_counts(rng: np.random.Generator, num_images: int, num_instances: int) -> np.ndarray:
    """Instances per image: heavy-tailed (negative binomial), about 1 % zeros, summing to ``num_instances``."""
    counts = rng.poisson(rng.gamma(1.3, num_instances / num_images / 1.3, size=num_images)).clip(1, 90)
    counts[rng.random(num_images) < 0.01] = 0
    while counts.sum() != num_instances:
        change = int(num_instances - counts.sum())
        pick = rng.choice(np.flatnonzero(counts > 0), size=min(abs(change), num_images // 2), replace=False)
        counts[pick] = (counts[pick] + np.sign(change)).clip(1, 90)
    return counts


def _rectangle_rle(x0: int, y0: int, x1: int, y1: int, height: int, width: int) -> list[int]:
    """Uncompressed (column-major) RLE counts of the filled rectangle [x0, x1) × [y0, y1)."""
    inside, outside = y1 - y0, height - (y1 - y0)
    counts = [x0 * height + y0]
    for _ in range(x0, x1 - 1):
        counts += [inside, outside]
    counts += [inside, (width - x1) * height + (height - y1)]
    return counts


def _polygons(rng, boxes: np.ndarray, sizes: np.ndarray) -> list[list[float]]:
    """One polygon per box: ``n`` points on a jittered ellipse inside the box, clipped to the image."""
    vertices = np.minimum(4 + rng.geometric(1 / 24, size=len(boxes)), 200)
    owner = np.repeat(np.arange(len(boxes)), vertices)
    step = np.arange(len(owner)) - np.repeat(np.cumsum(vertices) - vertices, vertices)
    angle = 2 * np.pi * (step + rng.uniform(-0.3, 0.3, len(owner))) / vertices[owner]
    radius = rng.uniform(0.7, 1.0, len(owner))
    x0, y0, w, h = (boxes[owner, i] for i in range(4))
    xs = np.clip(x0 + w / 2 * (1 + radius * np.cos(angle)), 0, sizes[owner, 0]).round(2)
    ys = np.clip(y0 + h / 2 * (1 + radius * np.sin(angle)), 0, sizes[owner, 1]).round(2)
    flat = np.stack([xs, ys], axis=1).reshape(-1)
    return [part.tolist() for part in np.split(flat, 2 * np.cumsum(vertices)[:-1])]


def write_coco_sized_split(
    folder: str | os.PathLike, *, num_images: int = 118_287, num_instances: int = 860_001, seed: int = 0
) -> dict[str, str]:
    """Write ``folder/annotations.json`` and ``folder/images/`` (links to one JPEG per size) unless present.

    Returns ``{"ann_file", "image_dir"}``. The same arguments give the same file.
    """
    folder = Path(folder)
    ann_file, image_dir = folder / "annotations.json", folder / "images"
    paths = {"ann_file": str(ann_file), "image_dir": str(image_dir)}
    if ann_file.is_file():
        return paths
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    image_dir.mkdir(parents=True, exist_ok=True)
    mix = np.array([fraction for _, _, fraction in COCO_SIZE_MIX])
    size_index = rng.choice(len(COCO_SIZE_MIX), size=num_images, p=mix / mix.sum())
    sizes = np.array([(w, h) for w, h, _ in COCO_SIZE_MIX])[size_index]
    for w, h, _ in COCO_SIZE_MIX:
        Image.new("RGB", (w, h), (120, 110, 100)).save(image_dir / f"size_{w}x{h}.jpg", quality=50)
    images = []
    for image_id, (w, h) in enumerate(sizes.tolist(), start=1):
        name = f"{image_id:012d}.jpg"
        link = image_dir / name
        if not link.is_symlink():
            link.symlink_to(f"size_{w}x{h}.jpg")
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
    counts = _instance_counts(rng, num_images, num_instances)
    owner = np.repeat(np.arange(num_images), counts)
    image_size = sizes[owner].astype(np.float64)
    wh = image_size * rng.beta(1.2, 4.0, size=(len(owner), 2)).clip(0.01, 1.0)
    xy = rng.uniform(0, 1, size=(len(owner), 2)) * (image_size - wh)
    boxes = np.concatenate([xy, wh], axis=1).round(2)
    crowd = rng.random(len(owner)) < 0.01  # COCO: 9 000 crowd regions of 860 000
    polygons = iter(_polygons(rng, boxes[~crowd], image_size[~crowd]))
    categories = rng.choice(COCO_CATEGORY_IDS, size=len(owner))
    annotations = []
    for ann_id, (image, box, is_crowd, category) in enumerate(
        zip(owner.tolist(), boxes.tolist(), crowd.tolist(), categories.tolist()), start=1
    ):
        if is_crowd:
            w, h = sizes[image].tolist()
            x0, y0 = int(box[0]), int(box[1])
            x1, y1 = max(x0 + 1, min(w, int(box[0] + box[2]))), max(y0 + 1, min(h, int(box[1] + box[3])))
            segmentation = {"counts": _rectangle_rle(x0, y0, x1, y1, h, w), "size": [h, w]}
        else:
            segmentation = [next(polygons)]
        annotations.append(
            {
                "segmentation": segmentation,
                "area": round(box[2] * box[3] * 0.75, 2),
                "iscrowd": int(is_crowd),
                "image_id": image + 1,
                "bbox": box,
                "category_id": category,
                "id": ann_id,
            }
        )
    data = {
        "info": {"description": "generated at COCO train 2017's size"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": f"category_{c}", "supercategory": "thing"} for c in COCO_CATEGORY_IDS],
    }
    partial = ann_file.with_suffix(".json.partial")
    with open(partial, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    partial.replace(ann_file)
    print(
        f"wrote {ann_file} ({ann_file.stat().st_size / 2**20:.0f} MiB, {num_images} images, {len(annotations)} "
        f"instances, {int(crowd.sum())} crowd) in {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    return paths
