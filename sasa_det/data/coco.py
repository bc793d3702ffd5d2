"""COCO-format detection / instance-segmentation dataset over pycocotools.

Labels are contiguous ``1..K`` (0 is background in torchvision's detectors); COCO category ids may
have gaps (COCO 2017 uses 1..90 for 80 classes), so the dataset maps ids to labels in ascending id
order and keeps both directions (``category_to_label``, ``label_to_category``).

Every record is checked when the dataset is built (:mod:`sasa_det.data.validation`): the json's
structure, types, ids and references, boxes, with masks the segmentations, and (``check_images``)
every image file: present, readable, not truncated, of the size the json says after EXIF orientation.
All problems are collected and raised together as a :class:`~sasa_det.data.validation.DatasetError`
naming file, record and fix, or with ``on_bad_records="drop"`` the records named are removed and
listed in :attr:`CocoDetectionDataset.report`.

What is fixed safely is fixed and counted in the report (and in :attr:`CocoDetectionDataset.stats`):

- crowd annotations (``iscrowd=1``): they mark regions, not instances; COCOeval handles them itself
  from the ground truth, so they never enter a training target.
- boxes partly outside the image are clipped to it; boxes narrower or shorter than ``min_box_size``
  pixels after clipping are removed.
- with ``with_masks=True``: polygon parts with fewer than 3 points are removed (pycocotools would read
  a 4-number polygon as a box).
- a missing ``area`` is filled in from the box (COCOeval needs it).
- with ``keep_empty=False``: images with no annotation left are dropped.
- images of any mode are converted to RGB and EXIF orientation is applied (:mod:`sasa_det.data.image_io`).

An image that fails to load later (changed on disk after the check) raises ``DatasetError`` naming
the file and the record, or with ``on_load_error="skip"`` is replaced by the next image of the
dataset with a warning naming it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from sasa_det.data.image_io import ImageReadError, load_rgb_image
from sasa_det.data.transforms import build_val_transforms
from sasa_det.data.validation import (
    BAD_RECORD_POLICIES,
    CHECK_LEVELS,
    DatasetError,
    DatasetReport,
    Problem,
    check_coco_dict,
    check_image_files,
    check_image_sizes,
    drop_bad_records,
    raise_if_problems,
    removed_polygon_parts,
)

logger = logging.getLogger(__name__)

# Consecutive unreadable images skipped (on_load_error="skip") before giving up.
_MAX_SKIPS = 10
_CHANGED_ON_DISK = (
    " It passed the check when the dataset was built, so it changed on disk during the run: restore it, or set"
    " on_bad_records=drop (config data.on_bad_records) to skip images that fail while training."
)

__all__ = ["CocoDetectionDataset", "DatasetError", "load_coco_quietly"]


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


class CocoDetectionDataset(torch.utils.data.Dataset):
    """Images and instance annotations of a COCO-format json file, every record checked on construction.

    Args:
        image_dir: folder holding the images; each image's ``file_name`` is relative to it.
        ann_file: COCO instances json (``images``, ``annotations``, ``categories``).
        transforms: a ``torchvision.transforms.v2`` callable applied as ``transforms(image, target)``
            with the image a ``tv_tensors.Image`` (uint8, 3×H×W), ``target["boxes"]`` a
            ``tv_tensors.BoundingBoxes`` (XYXY, canvas_size=(H, W)) and ``target["masks"]`` a
            ``tv_tensors.Mask`` (N×H×W uint8), so geometric transforms move boxes and masks with the
            image. ``None`` means :func:`build_val_transforms` (conversion to float 0..1 only).
        with_masks: decode instance masks (polygons, compressed or uncompressed RLE) into
            ``target["masks"]``; segmentations are then checked too.
        keep_empty: keep images that have no annotation left after filtering (wanted for
            evaluation: their false positives count). When ``False`` they are dropped and counted.
        min_box_size: boxes narrower or shorter than this many pixels after clipping to the image
            are removed (and counted).
        check_images: ``"header"`` (open each file: size, mode, EXIF orientation, JPEG/PNG end marker),
            ``"full"`` (decode every pixel) or ``"off"`` (images are first read when loaded).
        on_bad_records: ``"error"``: any problem raises :class:`DatasetError` listing all of them;
            ``"drop"``: the bad records (and an image's annotations with it) are removed and listed in
            :attr:`report`. Problems no drop can fix (a duplicate category id, a broken file) always raise.
        on_load_error: an image that fails when loaded (changed on disk after the check):
            ``"error"`` raises :class:`DatasetError` naming file and record; ``"skip"`` logs a warning
            naming them and returns the next image instead.
        cache_dir: where image-check results are cached (``None``: not cached).
        check_workers: threads for the image check (default ``min(8, cpus)``).
        progress: show a progress bar while checking images.
        name: the split's name in the report (``train`` / ``val``).
        report_dir: where the full problem list goes when it is too long for the error message.

    Each item is ``(image, target)``: ``image`` a float tensor [3, H, W] in 0..1 and ``target`` a dict
    with ``boxes`` float [N, 4] (xyxy, absolute pixels of the returned image), ``labels`` int64 [N]
    in 1..K, ``masks`` uint8 [N, H, W] (only with ``with_masks``), ``image_id`` (int) and
    ``orig_size`` ((height, width) of the image, after EXIF orientation). Tensors are plain ``torch.Tensor``.

    Attributes:
        coco: pycocotools ``COCO`` of the annotation file after dropped records are removed and missing
            areas filled (ground truth for evaluation).
        category_to_label / label_to_category: ``dict[int, int]`` between COCO ids and labels.
        class_names: category names, index ``label - 1``.
        image_ids: the COCO image ids in dataset order.
        report: :class:`DatasetReport` of everything fixed, dropped or noted.
        stats: counters of what was filtered (see the module docstring).
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        ann_file: str | os.PathLike,
        transforms: Callable[..., Any] | None = None,
        with_masks: bool = False,
        keep_empty: bool = True,
        min_box_size: float = 1.0,
        check_images: str = "header",
        on_bad_records: str = "error",
        on_load_error: str = "error",
        cache_dir: str | os.PathLike | None = None,
        check_workers: int | None = None,
        progress: bool = False,
        name: str = "dataset",
        report_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(
                f"Image folder {str(self.image_dir)!r} (for {str(self.ann_file)!r}) does not exist; check the image_dir path."
            )
        if min_box_size < 0:
            raise ValueError(f"min_box_size must be >= 0, got {min_box_size}.")
        if check_images not in CHECK_LEVELS:
            raise ValueError(f"check_images must be one of {CHECK_LEVELS}, got {check_images!r}.")
        if on_bad_records not in BAD_RECORD_POLICIES:
            raise ValueError(f"on_bad_records must be one of {BAD_RECORD_POLICIES}, got {on_bad_records!r}.")
        if on_load_error not in ("error", "skip"):
            raise ValueError(f"on_load_error must be 'error' or 'skip', got {on_load_error!r}.")
        self.transforms = transforms if transforms is not None else build_val_transforms()
        self.with_masks = with_masks
        self.keep_empty = keep_empty
        self.min_box_size = float(min_box_size)
        self.on_load_error = on_load_error
        self.report = DatasetReport(name, str(self.ann_file), str(self.image_dir))

        data = _read_json(self.ann_file)
        problems = check_coco_dict(data, self.ann_file, with_masks=with_masks)
        if check_images != "off" and isinstance(data, dict) and isinstance(data.get("images"), list):
            names = [
                img["file_name"]
                for img in data["images"]
                if isinstance(img, dict) and isinstance(img.get("file_name"), str) and img["file_name"]
            ]
            results, self.report.counts["image_checks_cached"] = check_image_files(
                self.image_dir, names, level=check_images, cache_dir=cache_dir, workers=check_workers, progress=progress
            )
            problems += check_image_sizes(data, self.image_dir, self.ann_file, results, self.report)
        fatal = [p for p in problems if p.section is None]
        if fatal or on_bad_records == "error":
            hint = "" if fatal else " (or set on_bad_records='drop' to drop these records and train on the rest)"
            raise_if_problems(problems, str(self.ann_file), report_dir, hint)
        if problems:
            data = drop_bad_records(data, problems)
            self.report.dropped = problems
        self._fill_missing_areas(data)
        self.coco = load_coco_quietly(dataset=data)

        category_ids = sorted(self.coco.cats)
        self.category_to_label: dict[int, int] = {cid: i + 1 for i, cid in enumerate(category_ids)}
        self.label_to_category: dict[int, int] = {i + 1: cid for i, cid in enumerate(category_ids)}
        self.class_names: list[str] = [str(self.coco.cats[cid].get("name", cid)) for cid in category_ids]

        self.stats: Counter[str] = Counter()
        self._annotations: dict[int, list[dict]] = {}
        self.image_ids: list[int] = []
        self._filter_annotations(data)
        if not self.image_ids:
            raise DatasetError(
                f"{self.ann_file}: no image is left to use:",
                [
                    Problem(
                        str(self.ann_file),
                        "",
                        f"all {len(data['images'])} image(s) were dropped (none has a usable annotation)",
                        "check the annotations, or keep empty images (keep_empty_train)",
                    )
                ],
            )
        self._log_stats()

    # ------------------------------------------------------------------ filtering
    def _fill_missing_areas(self, data: dict) -> None:
        for ann in data["annotations"]:
            if "area" not in ann:
                ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
                self.report.fix("missing area filled in from the box", ann["id"])

    def _filter_annotations(self, data: dict) -> None:
        per_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
        self.stats["images"] = len(per_image)
        self.stats["annotations"] = len(data["annotations"])
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                self.stats["crowd_ignored"] += 1
                self.report.fix("crowd annotation ignored in training (a region, not an instance)", ann["id"])
                continue
            img = self.coco.imgs[ann["image_id"]]
            x, y, w, h = (float(v) for v in ann["bbox"])
            x1, y1 = min(max(x, 0.0), img["width"]), min(max(y, 0.0), img["height"])
            x2, y2 = min(max(x + w, 0.0), img["width"]), min(max(y + h, 0.0), img["height"])
            if x2 - x1 < self.min_box_size or y2 - y1 < self.min_box_size:
                self.stats["degenerate_boxes"] += 1
                self.report.fix(
                    f"box smaller than min_box_size={self.min_box_size:g} px (after clipping) removed", ann["id"]
                )
                continue
            if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                self.stats["clipped_boxes"] += 1
                self.report.fix("box clipped to the image", ann["id"])
            kept = {
                "id": ann["id"],
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "box": (x1, y1, x2, y2),
            }
            if self.with_masks:
                segm = ann["segmentation"]
                if removed_polygon_parts(segm):
                    self.stats["polygon_parts_removed"] += removed_polygon_parts(segm)
                    self.report.fix("polygon parts with fewer than 3 points removed", ann["id"])
                    segm = [[float(v) for v in part] for part in segm if len(part) >= 6 and len(part) % 2 == 0]
                kept["segmentation"] = segm
            per_image[ann["image_id"]].append(kept)
        for img in data["images"]:
            anns = per_image[img["id"]]
            if not anns:
                self.stats["images_without_annotations"] += 1
                if not self.keep_empty:
                    self.stats["images_dropped_empty"] += 1
                    self.report.fix("image without annotations dropped (keep_empty=False)", img["id"])
                    continue
            self.image_ids.append(img["id"])
            self._annotations[img["id"]] = anns
        self.stats["images_kept"] = len(self.image_ids)
        self.stats["instances_kept"] = sum(len(a) for a in self._annotations.values())
        self.report.counts.update(
            {k: self.stats[k] for k in ("images", "annotations", "images_kept", "instances_kept")}
        )
        if self.keep_empty and self.stats["images_without_annotations"]:
            self.report.notes.append(
                f"{self.stats['images_without_annotations']} image(s) without annotations kept (negatives)"
            )
        used = {a["category_id"] for anns in self._annotations.values() for a in anns}
        unused = [self.class_names[self.category_to_label[c] - 1] for c in sorted(self.coco.cats) if c not in used]
        if unused:
            self.report.notes.append(f"categories with no training instance: {', '.join(unused[:20])}")

    def _log_stats(self) -> None:
        s = self.stats
        logger.info(
            "%s: %d/%d images kept (%d without annotations, %d dropped), %d instances; ignored %d crowd, "
            "removed %d degenerate boxes, clipped %d.",
            self.ann_file.name,
            s["images_kept"],
            s["images"],
            s["images_without_annotations"],
            s["images_dropped_empty"],
            s["instances_kept"],
            s["crowd_ignored"],
            s["degenerate_boxes"],
            s["clipped_boxes"],
        )

    # ------------------------------------------------------------------ access
    @property
    def num_classes(self) -> int:
        """Number of foreground classes K."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> Path:
        """Path of the ``index``-th image file."""
        return self.image_dir / self.coco.imgs[self.image_ids[index]]["file_name"]

    def load_image(self, index: int) -> tv_tensors.Image:
        """The ``index``-th image as a uint8 ``tv_tensors.Image`` [3, H, W] (RGB, EXIF orientation applied).

        Raises:
            DatasetError: the file is missing, unreadable, truncated or not of the size the json says;
                the message names the file, the image id and the annotation file.
        """
        image_id = self.image_ids[index]
        path = self.image_path(index)
        record = f"image id {image_id} of {str(self.ann_file)!r}"
        try:
            array = load_rgb_image(path)
        except ImageReadError as err:
            raise DatasetError(f"Image {err} ({record}).{_CHANGED_ON_DISK}") from err
        info = self.coco.imgs[image_id]
        if array.shape[:2] != (info["height"], info["width"]):
            raise DatasetError(
                f"Image {str(path)!r} ({record}) is {array.shape[0]}x{array.shape[1]} (HxW) but the annotation "
                f"file says {info['height']}x{info['width']}.{_CHANGED_ON_DISK}"
            )
        return tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1))

    def load_target(self, index: int) -> dict[str, Any]:
        """The ``index``-th raw target (before transforms) with tv_tensors for boxes and masks."""
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        height, width = info["height"], info["width"]
        anns = self._annotations[image_id]
        boxes = torch.tensor([a["box"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor([self.category_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": int(image_id),
            "orig_size": (int(height), int(width)),
        }
        if self.with_masks:
            masks = np.zeros((len(anns), height, width), dtype=np.uint8)
            for i, a in enumerate(anns):
                masks[i] = self._decode_mask(a)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        return target

    def _decode_mask(self, ann: dict) -> np.ndarray:
        rle = self.coco.annToRLE({"image_id": ann["image_id"], "segmentation": ann["segmentation"]})
        try:
            return mask_utils.decode(rle)
        except Exception as err:  # pycocotools raises bare errors on corrupt RLE strings
            raise ValueError(
                f"{str(self.ann_file)!r}: annotation id {ann['id']} (image id {ann['image_id']}) has a segmentation "
                f"that pycocotools cannot decode ({err}); fix or remove it."
            ) from err

    def _load_image_or_skip(self, index: int) -> tuple[int, tv_tensors.Image]:
        """Load image ``index``; under ``on_load_error="skip"`` a failing image is replaced by the next one
        (at most ``_MAX_SKIPS`` in a row) with a warning that names it."""
        for _ in range(_MAX_SKIPS):
            try:
                return index, self.load_image(index)
            except DatasetError as err:
                if self.on_load_error != "skip":
                    raise
                logger.warning(
                    "%s Skipped (on_bad_records=drop): image id %d is used in its place.",
                    err,
                    self.image_ids[(index + 1) % len(self)],
                )
                index = (index + 1) % len(self)
        raise DatasetError(
            f"{_MAX_SKIPS} images in a row failed to load from {str(self.image_dir)!r}; is the folder still there?"
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        index, image = self._load_image_or_skip(index)
        target = self.load_target(index)
        image, target = self.transforms(image, target)
        if not image.is_floating_point():
            image = TF.to_dtype(image, torch.float32, scale=True)
        target = {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in target.items()}
        if "masks" in target:
            target["masks"] = target["masks"].to(torch.uint8)
        return image.as_subclass(torch.Tensor), target
