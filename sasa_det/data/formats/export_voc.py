"""Writing a COCO-format split as a Pascal VOC folder (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets``).

What :mod:`sasa_det.data.formats.convert_voc` reads, so a dataset can go through the VOC path end to end: the
shapes generator uses it to give new users a VOC-form dataset to try the converter and the custom-data
recipe on. Boxes are written as VOC's 1-based inclusive pixel indices, the inverse of the converter's
``[xmin - 1, ymin - 1, xmax, ymax]``; crowd regions and segmentation are left out (VOC has neither).
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

__all__ = ["export_voc"]


def _element(parent: ET.Element, tag: str, text: object) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = str(text)
    return child


def export_voc(
    ann_files: list[str | os.PathLike],
    image_dirs: list[str | os.PathLike],
    out_root: str | os.PathLike,
    prefixes: list[str] | None = None,
) -> dict[str, object]:
    """Write the images of the COCO files (each with its image folder) as one VOC folder under ``out_root``.

    ``prefixes`` (one per file, e.g. the split names) are put before the file names, which must then be
    unique; without them the names must be unique across the files. Returns ``{"root", "images", "objects"}``.
    """
    root = Path(out_root)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    ids, seen, objects = [], set(), 0
    for index, (ann_file, image_dir) in enumerate(zip(ann_files, image_dirs)):
        prefix = f"{prefixes[index]}_" if prefixes else ""
        data = json.loads(Path(ann_file).read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        by_image: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        for image in data["images"]:
            file_name = prefix + Path(image["file_name"]).name
            if Path(file_name).stem in seen:
                raise ValueError(f"{ann_file}: image name {file_name!r} occurs twice; give export_voc prefixes")
            shutil.copyfile(Path(image_dir) / image["file_name"], root / "JPEGImages" / file_name)
            xml = ET.Element("annotation")
            _element(xml, "filename", file_name)
            size = ET.SubElement(xml, "size")
            for tag, value in (("width", image["width"]), ("height", image["height"]), ("depth", 3)):
                _element(size, tag, value)
            for ann in by_image.get(image["id"], []):
                if ann.get("iscrowd"):
                    continue
                x, y, w, h = ann["bbox"]
                obj = ET.SubElement(xml, "object")
                _element(obj, "name", names[ann["category_id"]])
                _element(obj, "difficult", 0)
                box = ET.SubElement(obj, "bndbox")
                corners = (round(x) + 1, round(y) + 1, max(round(x) + 1, round(x + w)), max(round(y) + 1, round(y + h)))
                for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), corners):
                    _element(box, tag, value)
                objects += 1
            stem = Path(file_name).stem
            ET.ElementTree(xml).write(root / "Annotations" / f"{stem}.xml")
            ids.append(stem)
            seen.add(stem)
    (root / "ImageSets" / "Main" / "all.txt").write_text("".join(f"{i}\n" for i in ids))
    return {"root": str(root), "images": len(ids), "objects": objects}
