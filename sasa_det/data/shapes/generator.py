"""Synthetic COCO-format dataset of circles, squares and triangles (and stars and diamonds).

Each image has a dark, noisy, slightly tinted background and ``min_objects..max_objects`` bright
shapes of random colour, size and (for squares and triangles) rotation. By default the shapes never
overlap (each keeps a 2-pixel gap), so the polygon of every annotation is exactly its visible region;
their bounding boxes may overlap. Pixels are painted from the rasterised polygon itself
(pycocotools), so ``COCO.annToMask`` of an annotation is exactly the painted shape.

The harder setting (:class:`~sasa_det.data.shapes.options.ShapesOptions`: ``max_occlusion``, ``clutter``,
``background``, the scale range) lets later shapes hide part of earlier ones (whose annotation is then the RLE
of the visible pixels), paints distractors and textures under the shapes (:mod:`~sasa_det.data.shapes.scenery`)
and draws small shapes too.

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
import dataclasses
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

from sasa_det.data.shapes.options import SHAPE_CLASSES, ShapesOptions
from sasa_det.data.shapes.scenery import add_texture, draw_clutter, object_colour

logger = logging.getLogger(__name__)

__all__ = ["SHAPE_KINDS", "SHAPE_NAMES", "ShapesOptions", "make_shapes_dataset", "generate_shapes_image"]

SHAPE_NAMES = tuple(ShapesOptions().classes)  # the default classes
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
assert tuple(SHAPE_KINDS) == SHAPE_CLASSES
_GAP = 2  # pixels kept free around each shape
_PLACEMENT_ATTEMPTS = 50
_MAX_ROTATION = 30.0  # degrees either way, shapes other than circles


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


def _radius(rng: np.random.Generator, options: ShapesOptions) -> float:
    low, high = options.min_scale, options.max_scale
    if options.scale_sampling == "log":
        return math.exp(rng.uniform(math.log(low), math.log(high))) * options.image_size / 2
    return rng.uniform(low, high) * options.image_size / 2


def _fits(mask: np.ndarray, occupied: np.ndarray, placed: list[dict[str, Any]], max_occlusion: float) -> bool:
    """Whether a new shape (drawn on top) with pixels ``mask`` may go here: clear of the others' gaps, or with
    ``max_occlusion`` > 0 hiding at most that fraction of each shape below it."""
    if not mask.any():
        return False
    if max_occlusion <= 0:
        return not (mask & occupied).any()
    for obj in placed:
        hidden = obj["full_area"] - int((obj["mask"] & ~mask).sum())
        if hidden > max_occlusion * obj["full_area"]:
            return False
    return True


def generate_shapes_image(
    rng: np.random.Generator, options: ShapesOptions | None = None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one image with the generator settings of ``options`` (default: the demo set's).

    The number of shapes is drawn uniformly from ``min_objects..max_objects`` (fewer if some cannot be placed
    in 50 attempts each; the first always fits); shapes other than circles are rotated within ±30 degrees.

    Returns:
        ``(image uint8 [H, W, 3], objects)`` with each object ``{"shape": index into classes, "polygon":
        [x0, y0, x1, y1, ...]}`` in pixel coordinates (COCO convention), plus ``"mask"`` (bool [H, W], the
        visible pixels) for a shape partly hidden by a later one.
    """
    options = options or ShapesOptions()
    size, classes = options.image_size, list(options.classes)
    base = rng.uniform(15, 80)
    tint = rng.uniform(-12, 12, size=3)
    canvas = base + tint + rng.normal(0.0, 12.0, size=(size, size, 3))
    if options.background == "textured":
        add_texture(rng, canvas)
    if options.clutter > 0:
        draw_clutter(rng, canvas, options.clutter)
    occupied = np.zeros((size, size), dtype=bool)
    placed: list[dict[str, Any]] = []
    count = int(rng.integers(options.min_objects, options.max_objects + 1))
    for _ in range(count):
        kind = int(rng.integers(0, len(classes)))
        colour = object_colour(rng)
        for _attempt in range(_PLACEMENT_ATTEMPTS):
            radius = _radius(rng, options)
            angle = 0.0 if classes[kind] == "circle" else math.radians(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
            center = (rng.uniform(radius + 1, size - 1 - radius), rng.uniform(radius + 1, size - 1 - radius))
            xy = np.round(_shape_polygon(classes[kind], center, radius, angle), 2)
            flat = [float(v) for v in xy.reshape(-1)]
            mask = _polygon_mask(flat, size)
            if not _fits(mask, occupied, placed, options.max_occlusion):
                continue
            occupied |= _dilate(mask, _GAP) if options.max_occlusion <= 0 else mask
            for obj in placed:
                obj["mask"] &= ~mask
            canvas[mask] = colour + rng.normal(0.0, 8.0, size=(int(mask.sum()), 3))
            placed.append({"shape": kind, "polygon": flat, "mask": mask, "full_area": int(mask.sum())})
            break
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    objects = []
    for obj in placed:
        entry = {"shape": obj["shape"], "polygon": obj["polygon"]}
        if int(obj["mask"].sum()) < obj["full_area"]:
            entry["mask"] = obj["mask"]
        objects.append(entry)
    return image, objects


def _annotation(obj: dict[str, Any], ann_id: int, image_id: int, category_ids: Sequence[int]) -> dict[str, Any]:
    """COCO annotation of a drawn shape: its polygon, or for a partly hidden shape the RLE of its visible pixels
    (area and box of those pixels)."""
    if "mask" in obj:
        rle = mask_utils.encode(np.asfortranarray(obj["mask"].astype(np.uint8)))
        segmentation: Any = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
        area = float(mask_utils.area(rle))
        x0, y0, w, h = (float(v) for v in mask_utils.toBbox(rle))
    else:
        xy = np.asarray(obj["polygon"], dtype=np.float64).reshape(-1, 2)
        segmentation, area = [obj["polygon"]], _polygon_area(xy)
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        w, h = float(x1 - x0), float(y1 - y0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": int(category_ids[obj["shape"]]),
        "segmentation": segmentation,
        "area": round(area, 2),
        "bbox": [round(float(x0), 2), round(float(y0), 2), round(w, 2), round(h, 2)],
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
    options: ShapesOptions | None = None,
    *,
    category_ids: Sequence[int] | None = None,
    force: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> dict[str, str]:
    """Write the shapes dataset under ``root`` (see the module docstring) unless it is already there.

    Args:
        root: output folder (created); wins over ``options.root``.
        options: the generator's settings (:class:`~sasa_det.data.shapes.options.ShapesOptions`: counts, image
            size, seed, classes, and the harder setting's scale range, occlusion, clutter and background);
            default its defaults.
        category_ids: COCO ids of the classes, in order (e.g. ``(1, 5, 9)`` for gapped ids); default 1..K.
        force: regenerate even if a matching dataset exists.
        progress: show a progress bar (tqdm) while writing.
        overrides: fields of ``options`` to replace, e.g. ``num_train=8, image_size=64``.

    Returns:
        ``{"train_images", "train_ann", "val_images", "val_ann"}`` paths (str), the keyword
        arguments of :class:`~sasa_det.data.CocoDataModule`.
    """
    options = dataclasses.replace(options or ShapesOptions(), **overrides)
    options.classes = [str(c) for c in options.classes]
    options.validate()
    classes = options.classes
    category_ids = [int(c) for c in (category_ids if category_ids is not None else range(1, len(classes) + 1))]
    if len(category_ids) != len(classes) or len(set(category_ids)) != len(category_ids) or min(category_ids) < 1:
        raise ValueError(
            f"category_ids must be {len(classes)} distinct positive ints (for {classes}), got {category_ids}."
        )
    root = Path(root)
    meta: dict[str, Any] = {
        "format": _FORMAT_VERSION,
        **{key: getattr(options, key) for key in ("num_train", "num_val", "image_size", "seed")},
        "min_objects": options.min_objects,
        "max_objects": options.max_objects,
        "category_ids": category_ids,
    }
    # Options at their defaults stay out of the meta, so datasets written before they existed stay up to date.
    if classes != list(SHAPE_NAMES):
        meta["classes"] = classes
    meta.update(options.changed())
    paths = _paths(root)
    if not force and _is_complete(root, meta):
        logger.info("Shapes dataset in %s is up to date; not regenerating.", root)
        return paths
    with _exclusive(root):
        if not force and _is_complete(root, meta):  # another process wrote it while we waited
            return paths
        _write_dataset(root, meta, dataclasses.replace(options, root=str(root)), paths, category_ids, progress)
    return paths


def _write_dataset(
    root: Path,
    meta: dict[str, Any],
    options: ShapesOptions,
    paths: dict[str, str],
    category_ids: list[int],
    progress: bool,
) -> None:
    num_train, num_val, image_size, seed = options.num_train, options.num_val, options.image_size, options.seed
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

    categories = [
        {"id": cid, "name": name, "supercategory": "shape"} for cid, name in zip(category_ids, options.classes)
    ]
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
            pixels, objects = generate_shapes_image(rng, options)
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
