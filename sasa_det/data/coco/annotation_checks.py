"""The checks of a COCO json's ``annotations`` section.

Each annotation needs an integer ``id`` (unique), an ``image_id`` and a ``category_id`` that exist, a ``bbox`` of
four finite numbers with positive width and height that overlaps its image, ``iscrowd`` 0 or 1, an ``area``
that is a number when given, and with masks a ``segmentation`` that can make a mask
(:mod:`~sasa_det.data.coco.segmentation_checks`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sasa_det.data.coco.json_values import all_finite_numbers, is_number, records_with_ids
from sasa_det.data.coco.problems import Problem
from sasa_det.data.coco.segmentation_checks import segmentation_problem

__all__ = ["annotation_problems"]


def annotation_problems(
    annotations: list,
    images: dict[int, dict],
    image_positions: dict,
    category_ids: set[int],
    file: str,
    with_masks: bool,
) -> list[Problem]:
    """Problems of the ``annotations`` list, each naming the annotation's position (dropping it removes the
    problem).

    Args:
        annotations: the json's list.
        images: the valid images by id (their size bounds the boxes and the RLEs).
        image_positions: every image id of the ``images`` list (an annotation must point to one).
        category_ids: the valid category ids.
        file: the annotation file (named in the problems).
        with_masks: check the segmentations too.
    """
    problems = []
    ann_positions: dict[int, list[int]] = defaultdict(list)
    for index, ann in records_with_ids(annotations, file, "annotations", problems, ann_positions):
        img = images.get(ann.get("image_id"))
        findings = _reference_findings(ann, image_positions, category_ids) + _value_findings(ann)
        findings += _box_findings(ann.get("bbox"), img)
        if with_masks and img is not None:
            findings += _segmentation_findings(ann, img)
        record = f"annotation id {ann['id']} (image id {ann.get('image_id')})"
        problems += [Problem(file, record, message, fix, "annotations", index) for message, fix in findings]
    for ann_id, positions in ann_positions.items():
        if len(positions) > 1:
            problems += [
                Problem(
                    file,
                    f"annotation id {ann_id}",
                    f"appears twice (positions {positions}); annotation ids must be unique",
                    "renumber the annotations",
                    "annotations",
                    i,
                )
                for i in positions
            ]
    return problems


def _reference_findings(ann: dict, image_positions: dict, category_ids: set[int]) -> list[tuple[str, str]]:
    """``(message, fix)`` of an image or category id the json does not define."""
    out = []
    if ann.get("image_id") not in image_positions:
        out.append(("points to an image id that is not in 'images'", "add the image or remove the annotation"))
    if ann.get("category_id") not in category_ids:
        out.append(
            (
                f"has category_id {ann.get('category_id')!r}, which is not in 'categories' (known ids: {sorted(category_ids)[:20]})",
                "add the category or fix the annotation",
            )
        )
    return out


def _value_findings(ann: dict) -> list[tuple[str, str]]:
    """``(message, fix)`` of a crowd flag that is not 0 or 1, or an area that is not a number."""
    out = []
    if ann.get("iscrowd", 0) not in (0, 1):
        out.append((f"has iscrowd={ann.get('iscrowd')!r}", "iscrowd must be 0 or 1"))
    if "area" in ann and not is_number(ann["area"]):
        out.append(
            (f"has area={ann['area']!r}", "set area to a number (or remove it to have it computed from the box)")
        )
    return out


def _box_findings(bbox: Any, img: dict | None) -> list[tuple[str, str]]:
    """``(message, fix)`` of a box that is malformed, empty, or outside its image (``img``, when valid)."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all_finite_numbers(bbox):
        return [(f"has a malformed bbox {bbox!r}", "write [x, y, width, height] with four finite numbers in pixels")]
    if bbox[2] <= 0 or bbox[3] <= 0:
        return [
            (
                f"has a bbox {bbox!r} with non-positive size",
                "[x, y, width, height] needs width > 0 and height > 0 (an [x1, y1, x2, y2] box converted wrongly?)",
            )
        ]
    if img is not None and (
        bbox[0] >= img["width"] or bbox[1] >= img["height"] or bbox[0] + bbox[2] <= 0 or bbox[1] + bbox[3] <= 0
    ):
        return [
            (
                f"has a bbox {bbox!r} entirely outside its {img['width']}x{img['height']} (WxH) image",
                "check the coordinates (normalised instead of pixels?) and the image's width/height",
            )
        ]
    return []


def _segmentation_findings(ann: dict, img: dict) -> list[tuple[str, str]]:
    """``(message, fix)`` of a missing segmentation, or one that cannot make a mask of its image."""
    if "segmentation" not in ann:
        return [("has no 'segmentation'", "add masks or build the dataset with with_masks=False")]
    reason, _ = segmentation_problem(ann["segmentation"], img["height"], img["width"])
    if reason:
        return [(f"has a segmentation that cannot make a mask: {reason}", "fix or remove the segmentation")]
    return []
