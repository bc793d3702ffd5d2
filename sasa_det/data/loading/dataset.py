"""The COCO-format detection / instance-segmentation dataset: checked records in, ``(image, target)`` out.

The records come from :func:`sasa_det.data.coco.reader.load_checked_coco`, which reads, checks and fixes a
split; this dataset only indexes them and loads images (RGB, EXIF orientation applied,
:mod:`sasa_det.data.image_io`) and masks. The records are packed into flat numpy arrays
(:class:`~sasa_det.data.coco.packed_records.PackedRecords`) and ``__getitem__`` decodes one, so data-loader
workers keep sharing the main process's copy instead of each growing a private one; the dataset holds no
Python object per image.

An image that fails to load (changed on disk after the check) raises ``DatasetError`` naming the file and
the record, or with ``on_load_error="skip"`` is replaced by the next image of the dataset with a warning
naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from sasa_det.data.coco.image_record import ImageRecord
from sasa_det.data.coco.problems import DatasetError
from sasa_det.data.coco.reader import load_coco_quietly
from sasa_det.data.coco.split_records import CocoRecords
from sasa_det.data.image_io import ImageReadError, load_rgb_image
from sasa_det.data.loading.transforms import build_val_transforms

logger = logging.getLogger(__name__)

# Consecutive unreadable images skipped (on_load_error="skip") before giving up.
_MAX_SKIPS = 10
_CHANGED_ON_DISK = (
    " It passed the check when the dataset was built, so it changed on disk during the run: restore it, or set"
    " on_bad_records=drop (config data.on_bad_records) to skip images that fail while training."
)
_LOAD_ERROR_POLICIES = ("error", "skip")

__all__ = ["CocoDetectionDataset", "DatasetError"]


def _segmentation_rle(segm: Any, height: int, width: int) -> dict:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as one compressed RLE, as pycocotools'
    ``annToRLE`` makes it."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    return segm


class CocoDetectionDataset(torch.utils.data.Dataset):
    """The images and instances of a split's :class:`~sasa_det.data.coco.split_records.CocoRecords`.

    Args:
        records: the checked split (:func:`~sasa_det.data.coco.reader.load_checked_coco`).
        transforms: a ``torchvision.transforms.v2`` callable applied as ``transforms(image, target)``
            with the image a ``tv_tensors.Image`` (uint8, 3×H×W), ``target["boxes"]`` a
            ``tv_tensors.BoundingBoxes`` (XYXY, canvas_size=(H, W)) and ``target["masks"]`` a
            ``tv_tensors.Mask`` (N×H×W uint8), so geometric transforms move boxes and masks with the
            image. ``None`` means :func:`build_val_transforms` (conversion to float 0..1 only).
        on_load_error: an image that fails when loaded (changed on disk after the check):
            ``"error"`` raises :class:`DatasetError` naming file and record; ``"skip"`` logs a warning
            naming them and returns the next image instead.

    Each item is ``(image, target)``: ``image`` a float tensor [3, H, W] in 0..1 and ``target`` a dict
    with ``boxes`` float [N, 4] (xyxy, absolute pixels of the returned image), ``labels`` int64 [N]
    in 1..K, ``masks`` uint8 [N, H, W] (only when the records have masks), ``image_id`` (int) and
    ``orig_size`` ((height, width) of the image, after EXIF orientation). Tensors are plain ``torch.Tensor``.

    Attributes:
        coco: pycocotools ``COCO`` of the records' ground truth (for evaluation; built on first use, only
            when the records kept their ground truth).
        category_to_label / label_to_category: ``dict[int, int]`` between COCO ids and labels.
        class_names: category names, index ``label - 1``.
        image_ids: the COCO image ids in dataset order (a list, built when asked for).
        with_masks: whether targets carry masks.
    """

    def __init__(
        self,
        records: CocoRecords,
        transforms: Callable[..., Any] | None = None,
        on_load_error: str = "error",
    ) -> None:
        super().__init__()
        if on_load_error not in _LOAD_ERROR_POLICIES:
            raise ValueError(f"on_load_error must be one of {_LOAD_ERROR_POLICIES}, got {on_load_error!r}.")
        self.records = records
        self.transforms = transforms if transforms is not None else build_val_transforms()
        self.on_load_error = on_load_error
        self.ann_file = Path(records.ann_file)
        self.image_dir = Path(records.image_dir)
        self.with_masks = records.with_masks
        self.class_names: list[str] = list(records.class_names)
        self.label_to_category: dict[int, int] = {i + 1: cid for i, cid in enumerate(records.category_ids)}
        self.category_to_label: dict[int, int] = {cid: label for label, cid in self.label_to_category.items()}

    @property
    def image_ids(self) -> list[int]:
        """The COCO image ids in dataset order."""
        return self.records.images.image_ids.tolist()

    @cached_property
    def coco(self) -> COCO:
        """The ground truth as a pycocotools ``COCO`` (what :class:`~sasa_det.evaluation.CocoEvaluator` reads)."""
        if self.records.ground_truth is None:
            raise ValueError(
                f"The records of {str(self.ann_file)!r} were loaded without their ground truth "
                "(load_checked_coco(keep_ground_truth=False), what a training split does); load them with "
                "keep_ground_truth=True to evaluate on them."
            )
        return load_coco_quietly(dataset=self.records.ground_truth)

    @property
    def num_classes(self) -> int:
        """Number of foreground classes K."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records.images)

    def image_path(self, index: int) -> Path:
        """Path of the ``index``-th image file."""
        return self.image_dir / self.records.images[index].file_name

    def load_image(self, index: int) -> tv_tensors.Image:
        """The ``index``-th image as a uint8 ``tv_tensors.Image`` [3, H, W] (RGB, EXIF orientation applied).

        Raises:
            DatasetError: the file is missing, unreadable, truncated or not of the size the json says;
                the message names the file, the image id and the annotation file.
        """
        record = self.records.images[index]
        path = self.image_path(index)
        where = f"image id {record.image_id} of {str(self.ann_file)!r}"
        try:
            array = load_rgb_image(path)
        except ImageReadError as err:
            raise DatasetError(f"Image {err} ({where}).{_CHANGED_ON_DISK}") from err
        if array.shape[:2] != (record.height, record.width):
            raise DatasetError(
                f"Image {str(path)!r} ({where}) is {array.shape[0]}x{array.shape[1]} (HxW) but the annotation "
                f"file says {record.height}x{record.width}.{_CHANGED_ON_DISK}"
            )
        return tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1))

    def load_target(self, index: int) -> dict[str, Any]:
        """The ``index``-th raw target (before transforms) with tv_tensors for boxes and masks."""
        record = self.records.images[index]
        size = (record.height, record.width)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(record.boxes.copy()), format="XYXY", canvas_size=size),
            "labels": torch.from_numpy(record.labels.copy()),
            "image_id": record.image_id,
            "orig_size": size,
        }
        if self.with_masks:
            masks = np.zeros((len(record.labels), *size), dtype=np.uint8)
            for i in range(len(record.labels)):
                masks[i] = self._decode_mask(record, i)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        return target

    def _decode_mask(self, record: ImageRecord, instance: int) -> np.ndarray:
        try:
            return mask_utils.decode(_segmentation_rle(record.segmentations[instance], record.height, record.width))
        except Exception as err:  # pycocotools raises bare errors on corrupt RLE strings
            raise ValueError(
                f"{str(self.ann_file)!r}: annotation id {int(record.annotation_ids[instance])} (image id "
                f"{record.image_id}) has a segmentation that pycocotools cannot decode ({err}); fix or remove it."
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
                    int(self.records.images.image_ids[(index + 1) % len(self)]),
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
