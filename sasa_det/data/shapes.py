"""Synthetic COCO-format dataset of circles, squares and triangles.

Each image has a dark, noisy, slightly tinted background and ``min_objects..max_objects`` bright
shapes of random colour, size and (for squares and triangles) rotation. The shapes themselves never
overlap (each keeps a 2-pixel gap), so the polygon of every annotation is exactly its visible region;
their bounding boxes may overlap. Pixels are painted from the rasterised polygon itself
(pycocotools), so ``COCO.annToMask`` of an annotation is exactly the painted shape.

Layout written under ``root``::

    root/train/000000.png ...        root/val/000000.png ...
    root/annotations/instances_train.json, instances_val.json
    root/shapes_meta.json            parameters of the generated set

Output is a pure function of the parameters: each image draws from its own random stream derived
from ``(seed, split, index)``, so the same parameters give byte-identical files (for a given Pillow
and zlib), and a call whose parameters match ``shapes_meta.json`` with all files present does nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

logger = logging.getLogger(__name__)

__all__ = ["SHAPE_KINDS", "SHAPE_NAMES", "make_shapes_dataset", "generate_shapes_image"]

SHAPE_NAMES = ("circle", "square", "triangle")  # the default classes
#: Every shape the generator can draw (``classes`` picks some): vertices, starting angle, inner-radius ratio
#: (stars alternate outer and inner vertices) and x/y stretch (diamonds are narrow squares).
SHAPE_KINDS: dict[str, tuple[int, float, float, float]] = {
    "circle": (24, 0.0, 1.0, 1.0),
    "square": (4, math.pi / 4, 1.0, 1.0),
    "triangle": (3, -math.pi / 2, 1.0, 1.0),
    "star": (10, -math.pi / 2, 0.45, 1.0),
    "diamond": (4, 0.0, 1.0, 0.55),
}
_FORMAT_VERSION = 1
_META_NAME = "shapes_meta.json"
_SPLITS = ("train", "val")
_CIRCLE_VERTICES = 24
_GAP = 2  # pixels kept free around each shape
_PLACEMENT_ATTEMPTS = 50


def _shape_polygon(kind: str, center: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """Vertices [V, 2] (x, y) of a shape with circumradius ``radius`` rotated by ``angle`` radians."""
    vertices, start, inner, stretch = SHAPE_KINDS[kind]
    # Squares start at 45 degrees so that angle 0 is axis-aligned; triangles and stars point up at angle 0.
    t = start + 2 * math.pi * np.arange(vertices) / vertices
    r = np.where(np.arange(vertices) % 2 == 1, radius * inner, radius)
    x, y = stretch * r * np.cos(t), r * np.sin(t)
    x, y = x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle)
    return np.stack([center[0] + x, center[1] + y], axis=1)


def _polygon_mask(flat: list[float], size: int) -> np.ndarray:
    rle = mask_utils.frPyObjects([flat], size, size)
    return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(pixels):
        grown = out.copy()
        grown[1:, :] |= out[:-1, :]
        grown[:-1, :] |= out[1:, :]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _polygon_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def generate_shapes_image(
    rng: np.random.Generator,
    image_size: int = 128,
    min_objects: int = 1,
    max_objects: int = 4,
    min_scale: float = 0.2,
    max_scale: float = 0.45,
    max_rotation: float = 30.0,
    classes: Sequence[str] = SHAPE_NAMES,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one image.

    Args:
        rng: the image's random stream.
        image_size: side of the square image in pixels.
        min_objects, max_objects: number of shapes drawn uniformly from this range (fewer if some
            cannot be placed without overlap in 50 attempts each; the first always fits).
        min_scale, max_scale: shape diameter (circumscribed circle) as a fraction of ``image_size``.
        max_rotation: shapes other than circles are rotated uniformly within ±this many degrees.
        classes: the shapes drawn (names of :data:`SHAPE_KINDS`), each equally likely.

    Returns:
        ``(image uint8 [H, W, 3], objects)`` with each object ``{"shape": index into classes,
        "polygon": [x0, y0, x1, y1, ...]}`` in pixel coordinates (COCO convention).
    """
    size = image_size
    base = rng.uniform(15, 80)
    tint = rng.uniform(-12, 12, size=3)
    canvas = base + tint + rng.normal(0.0, 12.0, size=(size, size, 3))
    occupied = np.zeros((size, size), dtype=bool)
    objects: list[dict[str, Any]] = []
    count = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(count):
        kind = int(rng.integers(0, len(classes)))
        colour = rng.uniform(60, 255, size=3)
        while colour.mean() < 140:  # keep a clear contrast with the dark background
            colour = rng.uniform(60, 255, size=3)
        for _attempt in range(_PLACEMENT_ATTEMPTS):
            radius = rng.uniform(min_scale, max_scale) * size / 2
            angle = 0.0 if classes[kind] == "circle" else math.radians(rng.uniform(-max_rotation, max_rotation))
            center = (rng.uniform(radius + 1, size - 1 - radius), rng.uniform(radius + 1, size - 1 - radius))
            xy = np.round(_shape_polygon(classes[kind], center, radius, angle), 2)
            flat = [float(v) for v in xy.reshape(-1)]
            mask = _polygon_mask(flat, size)
            if not mask.any() or (mask & occupied).any():
                continue
            occupied |= _dilate(mask, _GAP)
            canvas[mask] = colour + rng.normal(0.0, 8.0, size=(int(mask.sum()), 3))
            objects.append({"shape": kind, "polygon": flat})
            break
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return image, objects


def _annotation(obj: dict[str, Any], ann_id: int, image_id: int, category_ids: Sequence[int]) -> dict[str, Any]:
    xy = np.asarray(obj["polygon"], dtype=np.float64).reshape(-1, 2)
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": int(category_ids[obj["shape"]]),
        "segmentation": [obj["polygon"]],
        "area": round(_polygon_area(xy), 2),
        "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
        "iscrowd": 0,
    }


def _paths(root: Path) -> dict[str, str]:
    return {
        "train_images": str(root / "train"),
        "train_ann": str(root / "annotations" / "instances_train.json"),
        "val_images": str(root / "val"),
        "val_ann": str(root / "annotations" / "instances_val.json"),
    }


def _is_complete(root: Path, meta: dict[str, Any]) -> bool:
    meta_path = root / _META_NAME
    if not meta_path.is_file():
        return False
    try:
        stored = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    if stored != {**meta, "complete": True}:
        return False
    paths = _paths(root)
    for split in _SPLITS:
        folder = Path(paths[f"{split}_images"])
        if not Path(paths[f"{split}_ann"]).is_file():
            return False
        count = meta[f"num_{split}"]
        if not all((folder / f"{i:06d}.png").is_file() for i in range(count)):
            return False
    return True


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root`` (POSIX ``flock``; released even if the process dies), so that
    several processes (e.g. DDP ranks) asking for the same dataset generate it once."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): callers must not generate concurrently
        yield
        return
    with open(root / ".shapes.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_shapes_dataset(
    root: str | os.PathLike,
    num_train: int = 1000,
    num_val: int = 200,
    image_size: int = 128,
    seed: int = 0,
    min_objects: int = 1,
    max_objects: int = 4,
    category_ids: Sequence[int] | None = None,
    classes: Sequence[str] = SHAPE_NAMES,
    force: bool = False,
    progress: bool = False,
) -> dict[str, str]:
    """Write the shapes dataset under ``root`` (see the module docstring) unless it is already there.

    Args:
        root: output folder (created).
        num_train, num_val: number of images per split.
        image_size: image side in pixels (square images).
        seed: master seed; same parameters give identical files.
        min_objects, max_objects: shapes per image.
        category_ids: COCO ids of the classes, in order (e.g. ``(1, 5, 9)`` for gapped ids); default 1..K.
        classes: the shapes drawn, names of :data:`SHAPE_KINDS` (default circle, square, triangle; e.g.
            ``("star", "diamond")`` for a dataset whose classes a default-trained model has never seen).
        force: regenerate even if a matching dataset exists.
        progress: show a progress bar (tqdm) while writing.

    Returns:
        ``{"train_images", "train_ann", "val_images", "val_ann"}`` paths (str), the keyword
        arguments of :class:`~sasa_det.data.CocoDataModule`.
    """
    if num_train < 0 or num_val < 0:
        raise ValueError(f"num_train and num_val must be >= 0, got {num_train} and {num_val}.")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16 pixels, got {image_size}.")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects} and {max_objects}.")
    classes = [str(c) for c in classes]
    unknown = [c for c in classes if c not in SHAPE_KINDS]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct names among {list(SHAPE_KINDS)}, got {classes}.")
    category_ids = [int(c) for c in (category_ids if category_ids is not None else range(1, len(classes) + 1))]
    if len(category_ids) != len(classes) or len(set(category_ids)) != len(category_ids) or min(category_ids) < 1:
        raise ValueError(
            f"category_ids must be {len(classes)} distinct positive ints (for {classes}), got {category_ids}."
        )
    root = Path(root)
    meta = {
        "format": _FORMAT_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "seed": seed,
        "min_objects": min_objects,
        "max_objects": max_objects,
        "category_ids": category_ids,
    }
    if classes != list(SHAPE_NAMES):
        meta["classes"] = classes  # only when not the default, so existing datasets stay up to date
    paths = _paths(root)
    if not force and _is_complete(root, meta):
        logger.info("Shapes dataset in %s is up to date; not regenerating.", root)
        return paths
    with _exclusive(root):
        if not force and _is_complete(root, meta):  # another process wrote it while we waited
            return paths
        _write_dataset(root, meta, paths, category_ids, progress)
    return paths


def _write_dataset(
    root: Path, meta: dict[str, Any], paths: dict[str, str], category_ids: list[int], progress: bool
) -> None:
    num_train, num_val = meta["num_train"], meta["num_val"]
    image_size, seed = meta["image_size"], meta["seed"]
    min_objects, max_objects = meta["min_objects"], meta["max_objects"]
    meta_path = root / _META_NAME
    owned = [root / "train", root / "val", root / "annotations"]
    if not meta_path.is_file() and any(p.exists() and any(p.iterdir()) for p in owned):
        raise ValueError(
            f"{str(root)!r} already holds train/, val/ or annotations/ that were not written by the shapes "
            "generator; choose an empty folder or delete them."
        )
    # Marks the folder as ours but unfinished: an interrupted run is redone by the next call.
    meta_path.write_text(json.dumps({**meta, "complete": False}, indent=2), encoding="utf-8")
    for p in owned:
        if p.exists():
            shutil.rmtree(p)
        p.mkdir(parents=True)

    classes = meta.get("classes", list(SHAPE_NAMES))
    categories = [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in zip(category_ids, classes)]
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=num_train + num_val, desc="shapes", unit="img")
        except ImportError:
            bar = None
    for split_index, split in enumerate(_SPLITS):
        count = meta[f"num_{split}"]
        folder = Path(paths[f"{split}_images"])
        images, annotations = [], []
        for i in range(count):
            rng = np.random.default_rng(np.random.SeedSequence([seed, split_index, i]))
            pixels, objects = generate_shapes_image(rng, image_size, min_objects, max_objects, classes=classes)
            file_name = f"{i:06d}.png"
            Image.fromarray(pixels).save(folder / file_name, format="PNG")
            image_id = i + 1
            images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size})
            for obj in objects:
                annotations.append(_annotation(obj, len(annotations) + 1, image_id, category_ids))
            if bar is not None:
                bar.update(1)
        dataset = {
            "info": {"description": f"synthetic shapes ({split})", "version": str(_FORMAT_VERSION)},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        with open(paths[f"{split}_ann"], "w", encoding="utf-8") as f:
            json.dump(dataset, f)
    if bar is not None:
        bar.close()
    meta_path.write_text(json.dumps({**meta, "complete": True}, indent=2), encoding="utf-8")
    logger.info("Wrote shapes dataset (%d train, %d val images) to %s.", num_train, num_val, root)
