"""YOLO labels (one txt file per image, normalised coordinates) to a COCO instances json.

A label line is ``class cx cy w h`` (a box, centre and size as fractions of the image's width and
height) or ``class x1 y1 x2 y2 ... xn yn`` with n >= 3 (a polygon, fractions too), which becomes the
annotation's ``segmentation`` and its box the polygon's extent. Classes are 0-based indices into the
classes file; COCO category ids are ``index + 1``. Fractions refer to the image as displayed (after
EXIF orientation), as Ultralytics reads them.

Every image under the image folder is converted; one without a label file has no objects (YOLO's
background images). A label file without an image, an unknown class, a value outside 0..1 (pixel
coordinates instead of fractions?), a non-positive size or a malformed line is a problem; all of them
are raised together and nothing is written then.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from sasa_det.data.formats.coco_writer import IMAGE_EXTENSIONS, CocoBuilder
from sasa_det.data.image_io import ImageReadError, read_image_header

__all__ = ["convert_yolo", "read_class_names"]

# Normalised values may overshoot 0..1 by this much (rounding in exporters); more is an error.
_TOLERANCE = 0.01


def read_class_names(classes_file: str | os.PathLike) -> list[str]:
    """Class names of a YOLO classes file (one a line, blank lines ignored)."""
    path = Path(classes_file)
    if not path.is_file():
        raise FileNotFoundError(f"classes file {str(path)!r} does not exist.")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _parse_line(tokens: list[str], num_classes: int) -> tuple[int, list[float]] | str:
    """``(class index, values)`` of one label line, or what is wrong with it."""
    if len(tokens) != 5 and (len(tokens) < 7 or len(tokens) % 2 == 0):
        return f"has {len(tokens)} values; expected 5 (class cx cy w h) or an odd number >= 7 (class and polygon x y pairs)"
    try:
        cls = int(tokens[0])
        values = [float(t) for t in tokens[1:]]
    except ValueError:
        return "has a value that is not a number"
    if not 0 <= cls < num_classes:
        return f"has class {cls}, outside 0..{num_classes - 1} of the classes file"
    if not all(math.isfinite(v) and -_TOLERANCE <= v <= 1 + _TOLERANCE for v in values):
        return "has a coordinate outside 0..1: YOLO coordinates are fractions of the image size, not pixels"
    if len(tokens) == 5 and (values[2] <= 0 or values[3] <= 0):
        return "has a box with non-positive width or height"
    return cls, values


def convert_yolo(
    labels_dir: str | os.PathLike,
    images_dir: str | os.PathLike,
    classes_file: str | os.PathLike,
    out: str | os.PathLike,
) -> dict[str, Any]:
    """Convert YOLO label files into a COCO instances json at ``out``.

    Args:
        labels_dir: folder of ``.txt`` label files, mirroring ``images_dir``'s layout
            (``labels/a/b.txt`` labels ``images/a/b.jpg``).
        images_dir: image folder; the json's ``file_name`` values are relative to it.
        classes_file: class names, one a line, in index order.
        out: the json to write.

    Returns:
        Summary: ``{"out", "images", "annotations", "polygons", "images_without_labels", "classes"}``.

    Raises:
        DatasetError: every problem, with file, line and fix; nothing is written then.
    """
    labels_dir, images_dir = Path(labels_dir), Path(images_dir)
    for folder, what in ((labels_dir, "--labels"), (images_dir, "--images")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder {str(folder)!r} does not exist.")
    names = read_class_names(classes_file)
    builder = CocoBuilder(names, f"YOLO labels in {labels_dir}")
    if not names:
        builder.problem(classes_file, "", "lists no class", "write one class name a line")
    images = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    stems = {p.relative_to(images_dir).with_suffix("") for p in images}
    for label in sorted(labels_dir.rglob("*.txt")):
        if label.relative_to(labels_dir).with_suffix("") not in stems and label.name != "classes.txt":
            builder.problem(label, "", f"labels no image in {images_dir}", "add the image or remove the label file")
    unlabelled = polygons = 0
    for image_path in images:
        label = labels_dir / image_path.relative_to(images_dir).with_suffix(".txt")
        try:
            header = read_image_header(image_path)
        except ImageReadError as err:
            builder.problem(
                image_path, "", str(err).replace(repr(str(image_path)), "the file"), "replace or remove the image"
            )
            continue
        h, w = header.height, header.width
        image_id = builder.add_image(image_path.relative_to(images_dir).as_posix(), h, w)
        if not label.is_file():
            unlabelled += 1
            continue
        for line_no, line in enumerate(label.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            parsed = _parse_line(line.split(), len(names))
            if isinstance(parsed, str):
                builder.problem(label, f"line {line_no}", parsed, "fix or remove the line")
                continue
            cls, values = parsed
            if len(values) == 4:
                cx, cy, bw, bh = values
                builder.add_annotation(
                    image_id, cls + 1, ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
                )
                continue
            xy = np.asarray(values, dtype=np.float64).reshape(-1, 2) * (w, h)
            x, y = xy[:, 0], xy[:, 1]
            area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
            box = (x.min(), y.min(), x.max(), y.max())
            if box[2] <= box[0] or box[3] <= box[1]:
                builder.problem(
                    label, f"line {line_no}", "has a polygon with zero width or height", "fix or remove the line"
                )
                continue
            polygons += 1
            builder.add_annotation(
                image_id, cls + 1, box, segmentation=[[round(float(v), 3) for v in xy.reshape(-1)]], area=area
            )
    if not images:
        builder.problem(images_dir, "", "holds no image", "point --images at the image folder")
    builder.write(out)
    return {
        "out": str(out),
        "images": len(builder.images),
        "annotations": len(builder.annotations),
        "polygons": polygons,
        "images_without_labels": unlabelled,
        "classes": names,
    }
