"""Detections as columns: what :class:`~sasa_det.evaluation.CocoEvaluator` keeps, gathers and hands to COCOeval.

A batch of torchvision detector outputs becomes one :class:`DetectionColumns` at once
(:func:`columns_from_predictions`): the detections above the score threshold as flat arrays (image id,
COCO category id, xywh box, score) and, for instance masks, their compressed RLEs, encoded as the batch
arrives so that no binary mask outlives its batch. Detections keep, within each image, the order the
detector emitted them in: COCOeval breaks ties in score by that order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Optional

import numpy as np
import torch

__all__ = [
    "DetectionColumns",
    "RankResults",
    "coco_result_dicts",
    "columns_from_predictions",
    "concatenate_columns",
    "empty_columns",
    "encode_masks",
    "merge_rank_results",
    "sorted_by_image",
]


class DetectionColumns(NamedTuple):
    """Detections of any number of images, one row per detection."""

    #: int64 [N] COCO image id of each detection
    image_ids: np.ndarray
    #: int64 [N] COCO category ids
    category_ids: np.ndarray
    #: float32 [N, 4] boxes as x, y, width, height in original image pixels
    boxes_xywh: np.ndarray
    #: float32 [N] scores
    scores: np.ndarray
    #: the N masks as compressed RLE dicts (``counts`` bytes, as pycocotools encodes them); None without masks
    masks: Optional[list[dict[str, Any]]]

    def __len__(self) -> int:  # the number of detections, not of fields
        return int(self.scores.shape[0])

    def take(self, rows: np.ndarray) -> DetectionColumns:
        """The detections at the integer indices ``rows``, in that order."""
        masks = None if self.masks is None else [self.masks[i] for i in rows.tolist()]
        return DetectionColumns(
            self.image_ids[rows], self.category_ids[rows], self.boxes_xywh[rows], self.scores[rows], masks
        )


def empty_columns(with_masks: bool) -> DetectionColumns:
    """Columns of no detection."""
    return DetectionColumns(
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.float32),
        [] if with_masks else None,
    )


def concatenate_columns(chunks: Sequence[DetectionColumns], with_masks: bool) -> DetectionColumns:
    """One :class:`DetectionColumns` of ``chunks`` in order."""
    if not chunks:
        return empty_columns(with_masks)
    masks = [rle for chunk in chunks for rle in chunk.masks] if with_masks else None
    return DetectionColumns(
        np.concatenate([c.image_ids for c in chunks]),
        np.concatenate([c.category_ids for c in chunks]),
        np.concatenate([c.boxes_xywh for c in chunks]),
        np.concatenate([c.scores for c in chunks]),
        masks,
    )


def sorted_by_image(columns: DetectionColumns) -> DetectionColumns:
    """The detections ordered by image id, each image's in their original order (a stable sort)."""
    order = np.argsort(columns.image_ids, kind="stable")
    if np.array_equal(order, np.arange(len(order))):
        return columns
    return columns.take(order)


class RankResults(NamedTuple):
    """One rank's accumulated state, as it is gathered: the images it predicted (in order) and their detections."""

    image_ids: list[int]
    detections: DetectionColumns
    #: repeated predictions of an image this rank had already seen (dropped in ``update``)
    duplicates: int


def merge_rank_results(per_rank: Sequence[RankResults], with_masks: bool) -> tuple[list[int], DetectionColumns, int]:
    """Merge the ranks' results in rank order, each image keeping the detections of its first rank.

    ``DistributedSampler`` pads the last batch by repeating images, so an image may be predicted on two ranks;
    the later copies are dropped whatever their detections.

    Returns:
        ``(image ids, detections, duplicates)``: the distinct image ids, their detections, and how many
        repeated predictions of an image were dropped here and by the ranks themselves.
    """
    seen: set[int] = set()
    image_ids: list[int] = []
    chunks: list[DetectionColumns] = []
    duplicates = 0
    for rank in per_rank:
        duplicates += rank.duplicates
        fresh = [i for i in rank.image_ids if i not in seen]
        duplicates += len(rank.image_ids) - len(fresh)
        if len(fresh) < len(rank.image_ids):
            rows = np.flatnonzero(np.isin(rank.detections.image_ids, np.asarray(fresh, dtype=np.int64)))
            chunks.append(rank.detections.take(rows))
        else:
            chunks.append(rank.detections)
        seen.update(fresh)
        image_ids += fresh
    return image_ids, concatenate_columns(chunks, with_masks), duplicates


def coco_result_dicts(columns: DetectionColumns, iou_type: str) -> list[dict[str, Any]]:
    """COCO result dicts (``COCO.loadRes``'s input, the results JSON) of ``columns``, in their order; new dicts on
    every call (pycocotools' ``loadRes`` writes into them)."""
    ids = columns.image_ids.tolist()
    categories = columns.category_ids.tolist()
    scores = columns.scores.tolist()
    if iou_type == "bbox":
        boxes = columns.boxes_xywh.tolist()
        return [
            {"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(ids, categories, boxes, scores)
        ]
    return [
        {
            "image_id": i,
            "category_id": c,
            "segmentation": {"size": m["size"], "counts": m["counts"].decode()},
            "score": s,
        }
        for i, c, m, s in zip(ids, categories, columns.masks, scores)
    ]


def _category_lookup(label_to_category: Mapping[int, int]) -> np.ndarray:
    """``lookup[label]`` = COCO category id, -1 for an unmapped label."""
    lookup = np.full(max(label_to_category) + 1, -1, dtype=np.int64)
    lookup[list(label_to_category)] = list(label_to_category.values())
    return lookup


def _category_ids(labels: np.ndarray, label_to_category: Mapping[int, int]) -> np.ndarray:
    """COCO category id of each label; -1 where ``label_to_category`` does not map it."""
    lookup = _category_lookup(label_to_category)
    inside = (labels >= 0) & (labels < len(lookup))
    return np.where(inside, lookup[np.where(inside, labels, 0)], -1)


def encode_masks(binary: np.ndarray) -> list[dict[str, Any]]:
    """Compressed RLEs (``counts`` bytes, as pycocotools writes them) of the 0/1 uint8 masks ``binary`` [H, W, N]
    (any memory layout): hotcoco's encoder where it is installed (it reads any layout; the same bytes, tested),
    else pycocotools' (which needs the Fortran order, copied here)."""
    try:
        from hotcoco import mask as hotcoco_mask
    except ImportError:
        from pycocotools import mask as pycocotools_mask

        return pycocotools_mask.encode(np.asfortranarray(binary))
    return hotcoco_mask.encode(binary)


def _encoded_masks(probabilities: torch.Tensor, kept: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    """RLEs of the ``kept`` masks of one image, ``probabilities`` [N, H, W] above ``threshold``.

    On an accelerator the masks are thresholded and transposed there (column-major is what RLE runs along)
    and only the 0/1 bytes cross to the host; on the CPU numpy thresholds them (several times faster than
    torch's comparison here) and the encoder reads them in place.
    """
    probabilities = probabilities.detach()
    if probabilities.device.type != "cpu":
        binary = probabilities[torch.from_numpy(kept).to(probabilities.device)] > threshold
        return encode_masks(binary.transpose(1, 2).to(torch.uint8).contiguous().cpu().numpy().transpose(2, 1, 0))
    if probabilities.dtype not in (torch.float16, torch.float32, torch.float64, torch.uint8, torch.bool):
        probabilities = probabilities.float()
    array = probabilities.numpy()
    if not kept.all():
        array = array[kept]
    return encode_masks((array > threshold).view(np.uint8).transpose(1, 2, 0))


def columns_from_predictions(
    predictions: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    label_to_category: Mapping[int, int],
    score_threshold: float,
    mask_threshold: Optional[float] = None,
) -> DetectionColumns:
    """The detections of one batch scoring at least ``score_threshold``, as columns.

    Args:
        predictions: per image ``boxes`` [N, 4] (xyxy), ``scores`` [N], ``labels`` [N] (1..K) and, when
            ``mask_threshold`` is given, ``masks`` [N, H, W] probabilities (any device).
        image_ids: the COCO image id of each prediction.
        label_to_category: contiguous label -> COCO category id.
        mask_threshold: masks are foreground above it; they are thresholded where they are (only the kept
            ones) and RLE-encoded per image. None: no masks.

    Raises ValueError naming the image of a label that ``label_to_category`` does not map.
    """
    counts = [int(p["scores"].numel()) for p in predictions]
    scores = torch.cat([p["scores"].detach().reshape(-1).float() for p in predictions]).cpu().numpy()
    boxes = torch.cat([p["boxes"].detach().reshape(-1, 4).float() for p in predictions]).cpu().numpy()
    labels = torch.cat([p["labels"].detach().reshape(-1) for p in predictions]).cpu().numpy().astype(np.int64)
    keep = scores >= score_threshold
    owner = np.repeat(np.arange(len(predictions)), counts)[keep]
    category_ids = _category_ids(labels[keep], label_to_category)
    if (category_ids < 0).any():
        bad = int(np.flatnonzero(category_ids < 0)[0])
        raise ValueError(
            f"prediction for image id {image_ids[owner[bad]]} has label {int(labels[keep][bad])}, which "
            f"label_to_category does not map (known labels: {sorted(label_to_category)})."
        )
    boxes = boxes[keep]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    masks = None
    if mask_threshold is not None:
        masks = []
        for prediction, kept in zip(predictions, np.split(keep, np.cumsum(counts)[:-1])):
            if kept.any():
                masks += _encoded_masks(prediction["masks"], kept, mask_threshold)
    return DetectionColumns(np.asarray(image_ids, dtype=np.int64)[owner], category_ids, xywh, scores[keep], masks)
