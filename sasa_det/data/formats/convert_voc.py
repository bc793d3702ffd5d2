"""Pascal VOC (one XML file per image) to a COCO instances json.

Coordinates: VOC boxes are 1-based inclusive pixel indices (``xmin=1, xmax=W`` covers a whole image of
width W). As detectron2 does, the COCO box is ``[xmin - 1, ymin - 1, xmax, ymax]`` in continuous
coordinates, i.e. ``x = xmin - 1`` and ``width = xmax - xmin + 1``.

``difficult`` objects become crowd annotations (``iscrowd=1``): they are never training targets, and
COCOeval ignores detections matched to them instead of counting them as false positives, which is
what VOC's evaluation does with difficult objects. The summary counts them.

The image size written is the image file's (after EXIF orientation); an XML ``<size>`` that
disagrees is reported as a problem. Every problem of every file is collected first and raised
together (nothing is written then).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from sasa_det.data.formats.coco_writer import CocoBuilder, find_image
from sasa_det.data.image_io import ImageReadError, read_image_header

__all__ = ["convert_voc"]


def _ids_from_split_file(split_file: Path) -> list[str]:
    """Image ids of an ImageSets list (first token of each non-empty line)."""
    return [line.split()[0] for line in split_file.read_text(encoding="utf-8").splitlines() if line.strip()]


def _number(node: ET.Element, tag: str) -> float | None:
    try:
        value = float((node.findtext(tag) or "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse(xml_path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, error)``: filename, size and objects of one VOC XML file."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as err:
        return None, f"is not readable XML ({err})"
    if root.tag != "annotation":
        return None, f"has root element <{root.tag}>, not a VOC <annotation>"
    size = root.find("size")
    objects = []
    for index, obj in enumerate(root.findall("object")):
        box = obj.find("bndbox")
        coords = [_number(box, tag) for tag in ("xmin", "ymin", "xmax", "ymax")] if box is not None else [None] * 4
        difficult = (obj.findtext("difficult") or "0").strip()
        objects.append(
            {
                "index": index,
                "name": (obj.findtext("name") or "").strip(),
                "box": coords,
                "difficult": difficult in ("1", "true"),
            }
        )
    return {
        "filename": (root.findtext("filename") or "").strip(),
        "size": (_number(size, "height"), _number(size, "width")) if size is not None else (None, None),
        "objects": objects,
    }, None


def _add_objects(builder: CocoBuilder, xml_path: Path, image_id: int, objects: list[dict[str, Any]]) -> int:
    """Add the objects of one XML file to image ``image_id`` (a bad one is a problem); returns how many of
    those added are difficult."""
    difficult = 0
    for obj in objects:
        where = f"object {obj['index']} ({obj['name'] or 'no name'})"
        xmin, ymin, xmax, ymax = obj["box"]
        if obj["name"] not in builder.category_ids:
            builder.problem(
                xml_path,
                where,
                f"has class {obj['name']!r}, not in --classes {list(builder.category_ids)}",
                "add the class to --classes or fix the name",
            )
        elif None in obj["box"]:
            builder.problem(xml_path, where, "has no <bndbox> with numeric xmin, ymin, xmax, ymax", "fix the box")
        elif xmax < xmin or ymax < ymin:
            builder.problem(xml_path, where, f"has xmax < xmin or ymax < ymin ({obj['box']})", "fix the box")
        else:
            difficult += obj["difficult"]
            builder.add_annotation(
                image_id,
                builder.category_ids[obj["name"]],
                (xmin - 1, ymin - 1, xmax, ymax),
                iscrowd=int(obj["difficult"]),
            )
    return difficult


def convert_voc(
    annotations_dir: str | os.PathLike,
    images_dir: str | os.PathLike,
    out: str | os.PathLike,
    classes: list[str] | None = None,
    split_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Convert a folder of VOC XML files into a COCO instances json at ``out``.

    Args:
        annotations_dir: folder of ``<id>.xml`` files (searched recursively without ``split_file``).
        images_dir: image folder; the json's ``file_name`` values are relative to it. An XML's
            ``<filename>`` is looked up there, else ``<id>`` with any image extension.
        out: the json to write.
        classes: class names in label order; default: every name found, sorted. An object whose name
            is not listed is a problem.
        split_file: an ImageSets list (one id a line) restricting the conversion to those ids.

    Returns:
        Summary: ``{"out", "images", "annotations", "difficult", "classes"}``.

    Raises:
        DatasetError: every problem (unreadable XML, missing image, bad box, unknown class, ...) with
            the file, the object and the fix; nothing is written then.
    """
    annotations_dir, images_dir = Path(annotations_dir), Path(images_dir)
    for folder, what in ((annotations_dir, "--annotations"), (images_dir, "--images")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder {str(folder)!r} does not exist.")
    if split_file is not None:
        xml_files = [annotations_dir / f"{i}.xml" for i in _ids_from_split_file(Path(split_file))]
    else:
        xml_files = sorted(annotations_dir.rglob("*.xml"))
    parsed = [
        (path, *_parse(path)) if path.is_file() else (path, None, "does not exist (listed in the split file)")
        for path in xml_files
    ]
    names = sorted({o["name"] for _, rec, _ in parsed if rec for o in rec["objects"] if o["name"]})
    builder = CocoBuilder(classes if classes is not None else names, f"VOC annotations in {annotations_dir}")
    if not xml_files:
        builder.problem(annotations_dir, "", "holds no .xml file", "point --annotations at the VOC Annotations folder")
    difficult = 0
    for xml_path, record, error in parsed:
        if record is None:
            builder.problem(xml_path, "", error, "fix or remove the file")
            continue
        relative = xml_path.relative_to(annotations_dir).with_suffix("")
        image_path = (
            images_dir / record["filename"]
            if record["filename"] and (images_dir / record["filename"]).is_file()
            else find_image(images_dir, relative)
        )
        if image_path is None:
            builder.problem(
                xml_path,
                "",
                f"names image {record['filename']!r}, which is not in {images_dir} (nor is {relative} with an image extension)",
                "check --images or the XML's <filename>",
            )
            continue
        try:
            header = read_image_header(image_path)
        except ImageReadError as err:
            builder.problem(xml_path, "", f"image {err}", "replace the image or remove the XML file")
            continue
        if None not in record["size"] and 0 not in record["size"] and record["size"] != (header.height, header.width):
            builder.problem(
                xml_path,
                "<size>",
                f"says {record['size'][0]:g}x{record['size'][1]:g} (HxW) but {image_path.name} is {header.height}x{header.width} after EXIF orientation",
                "annotate the image as it is displayed, or fix <size>",
            )
            continue
        image_id = builder.add_image(image_path.relative_to(images_dir).as_posix(), header.height, header.width)
        difficult += _add_objects(builder, xml_path, image_id, record["objects"])
    builder.write(out)
    return {
        "out": str(out),
        "images": len(builder.images),
        "annotations": len(builder.annotations),
        "difficult": difficult,
        "classes": list(builder.category_ids),
    }
