"""COCO-format detection / instance-segmentation dataset over pycocotools.

Labels are contiguous ``1..K`` (0 is background in torchvision's detectors); COCO category ids may
have gaps (COCO 2017 uses 1..90 for 80 classes), so the dataset maps ids to labels in ascending id
order and keeps both directions (``category_to_label``, ``label_to_category``).

What is filtered out of the *training targets* is decided once, when the dataset is built, and
counted in :attr:`CocoDetectionDataset.stats` (one log line sums it up):

- crowd annotations (``iscrowd=1``): they mark regions, not instances; COCOeval handles them itself
  from the ground-truth file, so they never enter a target.
- degenerate boxes: after ``xywh -> xyxy`` and clipping to the image, width or height below
  ``min_box_size`` pixels (this includes boxes lying entirely outside the image).
- with ``with_masks=True``: polygon parts with fewer than 3 points (pycocotools would read a
  4-number polygon as a box); an annotation with no valid part left is dropped.
- with ``keep_empty=False``: images with no annotation left after the filters above.

Malformed input (missing files, duplicate ids, an annotation that points to an unknown image or
category, a bbox that is not four finite numbers with non-negative size, ...) raises ``ValueError``
or ``FileNotFoundError`` naming the file, the record and the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from sasa_det.data.transforms import build_val_transforms

logger = logging.getLogger(__name__)

__all__ = ["CocoDetectionDataset", "load_coco_quietly"]


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
        raise ValueError(f"Annotation file {str(path)!r} is not valid JSON: {err}. Fix or regenerate the file.") from err
    if not isinstance(data, dict):
        raise ValueError(f"Annotation file {str(path)!r} must hold a JSON object with 'images', 'annotations', 'categories'.")
    return data


class CocoDetectionDataset(torch.utils.data.Dataset):
    """Images and instance annotations of a COCO-format json file.

    Args:
        image_dir: folder holding the images; each image's ``file_name`` is relative to it.
        ann_file: COCO instances json (``images``, ``annotations``, ``categories``).
        transforms: a ``torchvision.transforms.v2`` callable applied as ``transforms(image, target)``
            with the image a ``tv_tensors.Image`` (uint8, 3×H×W), ``target["boxes"]`` a
            ``tv_tensors.BoundingBoxes`` (XYXY, canvas_size=(H, W)) and ``target["masks"]`` a
            ``tv_tensors.Mask`` (N×H×W uint8), so geometric transforms move boxes and masks with the
            image. ``None`` means :func:`build_val_transforms` (conversion to float 0..1 only).
        with_masks: decode instance masks (polygons, compressed or uncompressed RLE) into
            ``target["masks"]``.
        keep_empty: keep images that have no annotation left after filtering (wanted for
            evaluation: their false positives count). When ``False`` they are dropped and counted.
        min_box_size: boxes narrower or shorter than this many pixels after clipping to the image
            are removed (and counted).

    Each item is ``(image, target)``: ``image`` a float tensor [3, H, W] in 0..1 and ``target`` a dict
    with ``boxes`` float [N, 4] (xyxy, absolute pixels of the returned image), ``labels`` int64 [N]
    in 1..K, ``masks`` uint8 [N, H, W] (only with ``with_masks``), ``image_id`` (int) and
    ``orig_size`` ((height, width) of the file on disk). Tensors are plain ``torch.Tensor``.

    Attributes:
        coco: the pycocotools ``COCO`` object of ``ann_file`` (ground truth for evaluation).
        category_to_label / label_to_category: ``dict[int, int]`` between COCO ids and labels.
        class_names: category names, index ``label - 1``.
        image_ids: the COCO image ids in dataset order.
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
        self.transforms = transforms if transforms is not None else build_val_transforms()
        self.with_masks = with_masks
        self.keep_empty = keep_empty
        self.min_box_size = float(min_box_size)

        data = _read_json(self.ann_file)
        self._validate_top_level(data)
        self.coco = load_coco_quietly(dataset=data)

        category_ids = sorted(self.coco.cats)
        self.category_to_label: dict[int, int] = {cid: i + 1 for i, cid in enumerate(category_ids)}
        self.label_to_category: dict[int, int] = {i + 1: cid for i, cid in enumerate(category_ids)}
        self.class_names: list[str] = [str(self.coco.cats[cid].get("name", cid)) for cid in category_ids]

        self.stats: Counter[str] = Counter()
        self._annotations: dict[int, list[dict]] = {}
        self.image_ids: list[int] = []
        self._filter_annotations(data)
        self._log_stats()

    # ------------------------------------------------------------------ validation / filtering
    def _where(self) -> str:
        return f"{str(self.ann_file)!r}"

    def _validate_top_level(self, data: dict) -> None:
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(
                    f"{self._where()}: missing or non-list key {key!r}; a COCO instances file needs "
                    "'images', 'annotations' and 'categories' lists."
                )
        seen_images: set[int] = set()
        for img in data["images"]:
            if not isinstance(img, dict) or "id" not in img:
                raise ValueError(f"{self._where()}: an entry of 'images' has no 'id': {img!r}.")
            img_id = img["id"]
            for key in ("file_name", "height", "width"):
                if key not in img:
                    raise ValueError(
                        f"{self._where()}: image id {img_id} has no {key!r}; every image needs "
                        "'id', 'file_name', 'height' and 'width'."
                    )
            if img_id in seen_images:
                raise ValueError(f"{self._where()}: image id {img_id} appears twice in 'images'; image ids must be unique.")
            seen_images.add(img_id)
        seen_cats: set[int] = set()
        for cat in data["categories"]:
            if not isinstance(cat, dict) or "id" not in cat:
                raise ValueError(f"{self._where()}: an entry of 'categories' has no 'id': {cat!r}.")
            if cat["id"] in seen_cats:
                raise ValueError(f"{self._where()}: category id {cat['id']} appears twice in 'categories'.")
            seen_cats.add(cat["id"])
        if not seen_cats:
            raise ValueError(f"{self._where()}: 'categories' is empty; at least one category is needed.")
        seen_anns: set[Any] = set()
        for ann in data["annotations"]:
            ann_id = ann.get("id") if isinstance(ann, dict) else None
            if ann_id is None:
                raise ValueError(f"{self._where()}: an entry of 'annotations' has no 'id': {ann!r}.")
            if ann_id in seen_anns:
                raise ValueError(f"{self._where()}: annotation id {ann_id} appears twice; annotation ids must be unique.")
            seen_anns.add(ann_id)
            record = f"{self._where()}: annotation id {ann_id} (image id {ann.get('image_id')})"
            if ann.get("image_id") not in seen_images:
                raise ValueError(
                    f"{record} points to an image id that is not in 'images'; add the image or remove the annotation."
                )
            if ann.get("category_id") not in seen_cats:
                raise ValueError(
                    f"{record} has category_id {ann.get('category_id')!r}, which is not in 'categories' "
                    f"(known ids: {sorted(seen_cats)}); add the category or fix the annotation."
                )
            bbox = ann.get("bbox")
            if (
                not isinstance(bbox, (list, tuple))
                or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
                or bbox[2] < 0
                or bbox[3] < 0
            ):
                raise ValueError(
                    f"{record} has a malformed bbox {bbox!r}; expected [x, y, width, height] with four finite "
                    "numbers and non-negative width and height."
                )

    def _filter_annotations(self, data: dict) -> None:
        per_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
        self.stats["images"] = len(per_image)
        self.stats["annotations"] = len(data["annotations"])
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                self.stats["crowd_ignored"] += 1
                continue
            img = self.coco.imgs[ann["image_id"]]
            x, y, w, h = (float(v) for v in ann["bbox"])
            x1, y1 = min(max(x, 0.0), img["width"]), min(max(y, 0.0), img["height"])
            x2, y2 = min(max(x + w, 0.0), img["width"]), min(max(y + h, 0.0), img["height"])
            if x2 - x1 < self.min_box_size or y2 - y1 < self.min_box_size:
                self.stats["degenerate_boxes"] += 1
                continue
            kept = {"id": ann["id"], "image_id": ann["image_id"], "category_id": ann["category_id"], "box": (x1, y1, x2, y2)}
            if self.with_masks:
                segmentation = self._valid_segmentation(ann, img)
                if segmentation is None:
                    self.stats["invalid_segmentations"] += 1
                    continue
                kept["segmentation"] = segmentation
            per_image[ann["image_id"]].append(kept)
        for img in data["images"]:
            anns = per_image[img["id"]]
            if not anns:
                self.stats["images_without_annotations"] += 1
                if not self.keep_empty:
                    self.stats["images_dropped_empty"] += 1
                    continue
            self.image_ids.append(img["id"])
            self._annotations[img["id"]] = anns
        self.stats["images_kept"] = len(self.image_ids)
        self.stats["instances_kept"] = sum(len(a) for a in self._annotations.values())

    def _valid_segmentation(self, ann: dict, img: dict) -> Any:
        """Return the usable segmentation of ``ann`` (invalid polygon parts removed) or None."""
        record = f"{self._where()}: annotation id {ann['id']} (image id {ann['image_id']})"
        segm = ann.get("segmentation")
        if segm is None:
            raise ValueError(f"{record} has no 'segmentation'; add masks or build the dataset with with_masks=False.")
        if isinstance(segm, list):
            parts = [
                [float(v) for v in part]
                for part in segm
                if isinstance(part, (list, tuple)) and len(part) >= 6 and len(part) % 2 == 0
            ]
            return parts or None
        if isinstance(segm, dict) and "counts" in segm and "size" in segm:
            if list(segm["size"]) != [img["height"], img["width"]]:
                raise ValueError(
                    f"{record}: RLE size {segm['size']} differs from the image's [height, width] = "
                    f"[{img['height']}, {img['width']}]; fix the annotation or the image entry."
                )
            return segm
        raise ValueError(
            f"{record} has a segmentation that is neither a polygon list nor an RLE dict with "
            f"'counts' and 'size': {type(segm).__name__}."
        )

    def _log_stats(self) -> None:
        s = self.stats
        logger.info(
            "%s: %d/%d images kept (%d without annotations, %d dropped), %d instances; ignored %d crowd, "
            "removed %d degenerate boxes%s.",
            self.ann_file.name,
            s["images_kept"],
            s["images"],
            s["images_without_annotations"],
            s["images_dropped_empty"],
            s["instances_kept"],
            s["crowd_ignored"],
            s["degenerate_boxes"],
            f", {s['invalid_segmentations']} invalid segmentations" if self.with_masks else "",
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
        """The ``index``-th image as a uint8 ``tv_tensors.Image`` [3, H, W] (RGB, as stored on disk)."""
        image_id = self.image_ids[index]
        path = self.image_path(index)
        if not path.is_file():
            raise FileNotFoundError(
                f"Image {str(path)!r} (image id {image_id} of {self._where()}) does not exist; "
                "check image_dir or the image's 'file_name'."
            )
        with Image.open(path) as pil:
            array = np.asarray(pil.convert("RGB"))
        info = self.coco.imgs[image_id]
        if array.shape[:2] != (info["height"], info["width"]):
            raise ValueError(
                f"Image {str(path)!r} (image id {image_id} of {self._where()}) is {array.shape[0]}x{array.shape[1]} "
                f"(HxW) but the annotation file says {info['height']}x{info['width']}; fix the image entry."
            )
        return tv_tensors.Image(torch.from_numpy(array.copy()).permute(2, 0, 1))

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
                f"{self._where()}: annotation id {ann['id']} (image id {ann['image_id']}) has a segmentation "
                f"that pycocotools cannot decode ({err}); fix or remove it."
            ) from err

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image = self.load_image(index)
        target = self.load_target(index)
        image, target = self.transforms(image, target)
        if not image.is_floating_point():
            image = TF.to_dtype(image, torch.float32, scale=True)
        target = {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in target.items()}
        if "masks" in target:
            target["masks"] = target["masks"].to(torch.uint8)
        return image.as_subclass(torch.Tensor), target
