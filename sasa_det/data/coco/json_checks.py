"""The checks of a COCO instances json, section by section, and dropping the records they name.

:func:`check_coco_dict` reads the json's structure, then each section: ``categories``
(:mod:`~sasa_det.data.coco.category_checks`), ``images`` (:mod:`~sasa_det.data.coco.image_entry_checks`) and
``annotations`` (:mod:`~sasa_det.data.coco.annotation_checks`, with the segmentations of
:mod:`~sasa_det.data.coco.segmentation_checks`). Each finding is a :class:`~sasa_det.data.coco.problems.Problem`
that names the file, the record and the fix; all of them are collected, so one run lists every problem.

A problem whose record can be dropped names its section and position: with ``on_bad_records="drop"``,
:func:`drop_bad_records` removes exactly the records named (an image takes its annotations with it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from sasa_det.data.coco.annotation_checks import annotation_problems
from sasa_det.data.coco.category_checks import category_problems
from sasa_det.data.coco.image_entry_checks import image_entry_problems
from sasa_det.data.coco.problems import DatasetError, Problem

__all__ = ["check_coco_dict", "drop_bad_records"]

_SECTIONS = ("images", "annotations", "categories")


def check_coco_dict(data: Any, ann_file: str | os.PathLike, with_masks: bool = False) -> list[Problem]:
    """Every problem in a loaded COCO instances dict, each with file, record and fix.

    Checks the top-level structure; images (``id`` int, unique; ``file_name`` a non-empty string,
    unique; ``height``/``width`` positive ints); categories (``id`` int, unique; at least one);
    annotations (``id`` int, unique; ``image_id`` / ``category_id`` that exist; ``bbox`` four finite
    numbers with positive width and height that overlap the image; ``iscrowd`` 0 or 1; ``area`` a
    number when given); with ``with_masks``, a ``segmentation`` that can make a mask (a polygon with a
    part of >= 3 points, or an RLE of the image's size whose runs cover it exactly).
    """
    file = str(ann_file)
    problems = _structure_problems(data, file)
    if problems:
        return problems
    problems, category_ids = category_problems(data["categories"], file)
    if not data["annotations"]:
        problems.append(
            Problem(
                file,
                "",
                "'annotations' is empty: nothing to train on or evaluate",
                "check that the right file was given (converters write one)",
            )
        )
    found, images, image_positions = image_entry_problems(data["images"], file)
    problems += found
    problems += annotation_problems(data["annotations"], images, image_positions, category_ids, file, with_masks)
    return problems


def _structure_problems(data: Any, file: str) -> list[Problem]:
    """Problems of the json's top level: an object holding the three lists."""
    if not isinstance(data, dict):
        return [
            Problem(
                file,
                "",
                "the file does not hold a JSON object",
                "write {'images': [...], 'annotations': [...], 'categories': [...]}",
            )
        ]
    return [
        Problem(
            file,
            "",
            f"missing or non-list key {key!r}",
            "a COCO instances file needs 'images', 'annotations' and 'categories' lists",
        )
        for key in _SECTIONS
        if not isinstance(data.get(key), list)
    ]


def drop_bad_records(data: dict, problems: Iterable[Problem]) -> dict:
    """A copy of ``data`` without the records the problems name (an image's annotations go with it).

    Raises:
        DatasetError: a problem names no droppable record (e.g. a duplicate category id).
    """
    problems = list(problems)
    fatal = [p for p in problems if p.section is None]
    if fatal:
        raise DatasetError("These problems cannot be fixed by dropping records:", fatal)
    bad = {(p.section, p.index) for p in problems}
    images = [img for i, img in enumerate(data["images"]) if ("images", i) not in bad]
    kept_ids = {img["id"] for img in images}
    annotations = [
        ann
        for i, ann in enumerate(data["annotations"])
        if ("annotations", i) not in bad and ann.get("image_id") in kept_ids
    ]
    return {**data, "images": images, "annotations": annotations}
