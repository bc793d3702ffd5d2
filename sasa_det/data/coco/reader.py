"""A COCO-format split read, checked and fixed into plain per-image records: :func:`load_checked_coco`.

Every record is checked when a split is loaded (:mod:`~sasa_det.data.coco.json_checks`, :mod:`~sasa_det.data.coco.image_file_checks`): the json's structure,
types, ids and references, boxes, with masks the segmentations, and (``checks.check_images``) every image
file: present, readable, not truncated, of the size the json says after EXIF orientation. All problems are
collected and raised together as a :class:`~sasa_det.data.coco.problems.DatasetError` naming file, record and
fix, or with ``on_bad_records="drop"`` the records named are removed and listed in the report.

What is fixed safely is fixed and counted in the :class:`~sasa_det.data.coco.report.DatasetReport`:

- crowd annotations (``iscrowd=1``): they mark regions, not instances; COCOeval handles them itself
  from the ground truth, so they never enter a training target.
- boxes partly outside the image are clipped to it; boxes narrower or shorter than ``min_box_size``
  pixels after clipping are removed.
- with ``with_masks=True``: polygon parts with fewer than 3 points are removed (pycocotools would read
  a 4-number polygon as a box).
- a missing ``area`` is filled in from the box (COCOeval needs it).
- with ``keep_empty=False``: images with no annotation left are dropped.
- images of any mode are converted to RGB and EXIF orientation is applied when loaded
  (:mod:`sasa_det.data.image_io`); the check counts them.

Labels are contiguous ``1..K`` (0 is background in torchvision's detectors); COCO category ids may
have gaps (COCO 2017 uses 1..90 for 80 classes), so labels follow the ids in ascending order.

The records are plain values (ints, strings, numpy arrays, the segmentations' lists and dicts), one
:class:`ImageRecord` per image, so that a dataset can index them and they can be shared or serialised as
they are.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from pycocotools.coco import COCO

from sasa_det.choices import choice
from sasa_det.data.coco.cache import default_cache_dir
from sasa_det.data.coco.image_file_checks import CHECK_LEVELS, check_image_files, check_image_sizes
from sasa_det.data.coco.image_record import ImageRecord
from sasa_det.data.coco.json_checks import check_coco_dict, drop_bad_records
from sasa_det.data.coco.packed_records import PackedRecords
from sasa_det.data.coco.problems import DatasetError, Problem, raise_if_problems
from sasa_det.data.coco.report import DatasetReport
from sasa_det.data.coco.segmentation_checks import removed_polygon_parts
from sasa_det.data.coco.split_records import CocoRecords

__all__ = ["BAD_RECORD_POLICIES", "DatasetChecks", "load_checked_coco", "load_coco_quietly"]

logger = logging.getLogger(__name__)

#: What a record that fails a check does: stop the run with the list of every problem, or be dropped.
BAD_RECORD_POLICIES = ("error", "drop")


@dataclass
class DatasetChecks:
    """How a COCO split is checked when it is loaded (the ``data.check_*`` and ``data.on_bad_records`` keys)."""

    #: before training open every image: "header" (size/mode/EXIF, fast) | "full" (decode all pixels) | "off"
    check_images: str = choice(CHECK_LEVELS, default="header")
    #: "error": list every bad record and stop | "drop": remove them (listed in data_report_*), skip training
    #: images that fail later
    on_bad_records: str = choice(BAD_RECORD_POLICIES, default="error")
    #: cache the image check by file size + modification time (a second run does not reopen the images), and the
    #: checked, packed training records (records/: every rank and later run reads them instead of checking again)
    check_cache: bool = True
    #: image-check cache folder; null = $SASA_DET_CACHE_DIR or ~/.cache/sasa_det
    check_cache_dir: Optional[str] = None
    #: threads for the image check; null = min(8, CPUs)
    check_workers: Optional[int] = None

    def cache_folder(self) -> Path | None:
        """Where image-check results are cached (``None``: not cached)."""
        if not self.check_cache:
            return None
        return Path(self.check_cache_dir) if self.check_cache_dir else default_cache_dir()


def load_coco_quietly(ann_file: str | os.PathLike | None = None, dataset: dict | None = None) -> COCO:
    """Build a pycocotools ``COCO`` from a json file or an already-loaded dict, silencing its prints.

    Exactly one of ``ann_file`` / ``dataset`` must be given. A missing or unparsable file raises an
    error naming it.
    """
    if (ann_file is None) == (dataset is None):
        raise ValueError("load_coco_quietly: pass exactly one of ann_file or dataset.")
    if ann_file is not None:
        dataset = _read_json(Path(ann_file))
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"Annotation file {str(path)!r} does not exist; check the path (e.g. the dataset's ann_file setting)."
        )
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"Annotation file {str(path)!r} is not valid JSON: {err}. Fix or regenerate the file."
        ) from err
    if not isinstance(data, dict):
        raise DatasetError(
            f"Annotation file {str(path)!r} must hold a JSON object with 'images', 'annotations', 'categories'."
        )
    return data


def load_checked_coco(
    ann_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    checks: DatasetChecks | None = None,
    *,
    with_masks: bool = False,
    keep_empty: bool = True,
    min_box_size: float = 1.0,
    name: str = "dataset",
    report_dir: str | os.PathLike | None = None,
    progress: bool = False,
    keep_ground_truth: bool = True,
) -> tuple[CocoRecords, DatasetReport]:
    """Read a COCO instances json, check every record (and image), fix what is safe: ``(records, report)``.

    Args:
        ann_file: COCO instances json (``images``, ``annotations``, ``categories``).
        image_dir: folder holding the images; each image's ``file_name`` is relative to it.
        checks: how images are checked and what a bad record does (:class:`DatasetChecks`; default: headers
            checked, any problem raises). Problems no drop can fix (a duplicate category id, a broken file)
            always raise.
        with_masks: check and keep the segmentations (polygons, compressed or uncompressed RLE).
        keep_empty: keep images that have no annotation left after the fixes (wanted for evaluation: their
            false positives count). When ``False`` they are dropped and counted.
        min_box_size: boxes narrower or shorter than this many pixels after clipping are removed (and counted).
        name: the split's name in the report (``train`` / ``val``).
        report_dir: where the full problem list goes when it is too long for the error message.
        progress: show a progress bar while checking images.
        keep_ground_truth: keep the checked json in ``records.ground_truth`` (for evaluation); ``False`` lets
            it go once the records are packed (a training split: less memory in the process and its workers).

    Returns:
        The :class:`CocoRecords` and the :class:`~sasa_det.data.coco.report.DatasetReport` of everything fixed,
        dropped or noted (``counts`` holds the totals and what each fix removed).

    Raises:
        FileNotFoundError: the json or the image folder does not exist.
        DatasetError: problems in the split (all listed with file, record and fix), or no image left.
    """
    checks = checks or DatasetChecks()
    ann_path, image_path = Path(ann_file), Path(image_dir)
    if not image_path.is_dir():
        raise FileNotFoundError(
            f"Image folder {str(image_path)!r} (for {str(ann_path)!r}) does not exist; check the image_dir path."
        )
    if min_box_size < 0:
        raise ValueError(f"min_box_size must be >= 0, got {min_box_size}.")
    if checks.on_bad_records not in BAD_RECORD_POLICIES:
        raise ValueError(f"on_bad_records must be one of {BAD_RECORD_POLICIES}, got {checks.on_bad_records!r}.")
    report = DatasetReport(name, str(ann_path), str(image_path))
    data = _checked_json(ann_path, image_path, checks, with_masks, report, report_dir, progress)
    _fill_missing_areas(data, report)
    category_ids = sorted(cat["id"] for cat in data["categories"])
    names_by_id = {cat["id"]: str(cat.get("name", cat["id"])) for cat in data["categories"]}
    images = PackedRecords.pack(
        _image_records(data, category_ids, with_masks, keep_empty, float(min_box_size), report), with_masks
    )
    num_images = len(data["images"])
    records = CocoRecords(
        images=images,
        category_ids=category_ids,
        class_names=[names_by_id[cid] for cid in category_ids],
        ground_truth=data if keep_ground_truth else None,
        ann_file=str(ann_path),
        image_dir=str(image_path),
        with_masks=with_masks,
    )
    if not records.images:
        raise DatasetError(
            f"{ann_path}: no image is left to use:",
            [
                Problem(
                    str(ann_path),
                    "",
                    f"all {num_images} image(s) were dropped (none has a usable annotation)",
                    "check the annotations, or keep empty images (keep_empty_train)",
                )
            ],
        )
    _note_unused_categories(records, report)
    _log_counts(ann_path.name, report.counts)
    return records, report


def _checked_json(
    ann_path: Path,
    image_path: Path,
    checks: DatasetChecks,
    with_masks: bool,
    report: DatasetReport,
    report_dir: str | os.PathLike | None,
    progress: bool,
) -> dict:
    """The split's json after every check (json, then image files): problems raise, or with
    ``on_bad_records="drop"`` their records are dropped and listed in ``report``."""
    data = _read_json(ann_path)
    problems = check_coco_dict(data, ann_path, with_masks=with_masks)
    if checks.check_images != "off" and isinstance(data.get("images"), list):
        names = [
            img["file_name"]
            for img in data["images"]
            if isinstance(img, dict) and isinstance(img.get("file_name"), str) and img["file_name"]
        ]
        results, report.counts["image_checks_cached"] = check_image_files(
            image_path,
            names,
            level=checks.check_images,
            cache_dir=checks.cache_folder(),
            workers=checks.check_workers,
            progress=progress,
        )
        problems += check_image_sizes(data, image_path, ann_path, results, report)
    fatal = [p for p in problems if p.section is None]
    if fatal or checks.on_bad_records == "error":
        hint = "" if fatal else " (or set on_bad_records='drop' to drop these records and train on the rest)"
        raise_if_problems(problems, str(ann_path), report_dir, hint)
    if problems:
        data = drop_bad_records(data, problems)
        report.dropped = problems
    return data


def _fill_missing_areas(data: dict, report: DatasetReport) -> None:
    for ann in data["annotations"]:
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
            report.fix("missing area filled in from the box", ann["id"])


def _image_records(
    data: dict, category_ids: list[int], with_masks: bool, keep_empty: bool, min_box_size: float, report: DatasetReport
) -> list[ImageRecord]:
    """The fixed annotations of every image kept, with the fixes and totals counted in ``report``."""
    label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}
    images = {img["id"]: img for img in data["images"]}
    kept: dict[int, list[tuple[int, tuple[float, float, float, float], int, Any]]] = {i: [] for i in images}
    counts: Counter[str] = Counter(images=len(images), annotations=len(data["annotations"]))
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            counts["crowd_ignored"] += 1
            report.fix("crowd annotation ignored in training (a region, not an instance)", ann["id"])
            continue
        img = images[ann["image_id"]]
        x, y, w, h = (float(v) for v in ann["bbox"])
        x1, y1 = min(max(x, 0.0), img["width"]), min(max(y, 0.0), img["height"])
        x2, y2 = min(max(x + w, 0.0), img["width"]), min(max(y + h, 0.0), img["height"])
        if x2 - x1 < min_box_size or y2 - y1 < min_box_size:
            counts["degenerate_boxes"] += 1
            report.fix(f"box smaller than min_box_size={min_box_size:g} px (after clipping) removed", ann["id"])
            continue
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            counts["clipped_boxes"] += 1
            report.fix("box clipped to the image", ann["id"])
        segm = None
        if with_masks:
            segm = ann["segmentation"]
            if removed_polygon_parts(segm):
                counts["polygon_parts_removed"] += removed_polygon_parts(segm)
                report.fix("polygon parts with fewer than 3 points removed", ann["id"])
                segm = [[float(v) for v in part] for part in segm if len(part) >= 6 and len(part) % 2 == 0]
        kept[ann["image_id"]].append((ann["id"], (x1, y1, x2, y2), label_of[ann["category_id"]], segm))
    records = []
    for img in data["images"]:
        instances = kept[img["id"]]
        if not instances:
            counts["images_without_annotations"] += 1
            if not keep_empty:
                counts["images_dropped_empty"] += 1
                report.fix("image without annotations dropped (keep_empty=False)", img["id"])
                continue
        records.append(
            ImageRecord(
                image_id=int(img["id"]),
                file_name=str(img["file_name"]),
                height=int(img["height"]),
                width=int(img["width"]),
                boxes=np.array([box for _, box, _, _ in instances], dtype=np.float32).reshape(-1, 4),
                labels=np.array([label for _, _, label, _ in instances], dtype=np.int64),
                annotation_ids=np.array([ann_id for ann_id, _, _, _ in instances], dtype=np.int64),
                segmentations=[segm for _, _, _, segm in instances] if with_masks else [],
            )
        )
    counts["images_kept"] = len(records)
    counts["instances_kept"] = sum(len(r.labels) for r in records)
    report.counts.update(counts)
    if keep_empty and counts["images_without_annotations"]:
        report.notes.append(f"{counts['images_without_annotations']} image(s) without annotations kept (negatives)")
    return records


def _note_unused_categories(records: CocoRecords, report: DatasetReport) -> None:
    used = set(np.unique(records.images.labels).tolist())
    unused = [name for label, name in enumerate(records.class_names, start=1) if label not in used]
    if unused:
        report.notes.append(f"categories with no training instance: {', '.join(unused[:20])}")


def _log_counts(file_name: str, counts: dict[str, int]) -> None:
    logger.info(
        "%s: %d/%d images kept (%d without annotations, %d dropped), %d instances; ignored %d crowd, "
        "removed %d degenerate boxes, clipped %d.",
        file_name,
        counts.get("images_kept", 0),
        counts.get("images", 0),
        counts.get("images_without_annotations", 0),
        counts.get("images_dropped_empty", 0),
        counts.get("instances_kept", 0),
        counts.get("crowd_ignored", 0),
        counts.get("degenerate_boxes", 0),
        counts.get("clipped_boxes", 0),
    )
