"""Test-time augmentation: a detector run on flipped and rescaled views of each image, the views' detections
merged by weighted box fusion (or NMS over their union).

Views are every ``(flip, scale)`` pair of :class:`TtaOptions`. A scale multiplies the detector's own resize
(torchvision's ``transform.min_size`` / ``max_size``) for that view; the detector maps its boxes back to the
input image as always. A horizontal flip runs the mirrored image and mirrors the boxes back
(``x1, x2 -> W - x2, W - x1``).

**Merging** (per image and class):

* ``"wbf"``, weighted box fusion (Solovyev et al. 2019, arXiv:1910.13302) with order-free clusters: a cluster
  is a connected group of same-class boxes linked by IoU > ``iou_threshold``. Its box is the score-weighted
  mean of its boxes, its score the mean score times ``min(n, V) / V`` for ``n`` boxes from ``V`` views, so an
  object found in one view only is down-weighted. The paper's clusters grow greedily in score order; ours
  depend on the set of boxes alone, not on the order of equal scores, so a mirror-symmetric image gives
  mirror-symmetric boxes. Within one view the detector's own NMS (IoU 0.5) leaves no two same-class boxes
  linked at the default 0.55, so a cluster gathers one object's boxes across views.
* ``"nms"``: torchvision's per-class NMS over the union of the views' detections. Of two equal-scored boxes
  that overlap (a box and its mirror image near the middle) it keeps one, whichever comes first.

Then the ``detections_per_img`` highest scores are kept. **One view is plain inference**: its detections are
returned unchanged, not merged. Boxes only: Mask R-CNN's masks are not merged (the config refuses it).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_iou

from sasa_det.evaluation.options import TTA_FLIPS, TTA_MERGES, TtaOptions

__all__ = ["TTA_FLIPS", "TTA_MERGES", "TestTimeAugmentation", "TtaOptions", "merge_detections"]


def _weighted_box_fusion(boxes: Tensor, scores: Tensor, views: int, iou_threshold: float) -> tuple[Tensor, Tensor]:
    """Fuse one class's boxes ``[N, 4]`` with ``scores [N]`` from ``views`` views -> ``(boxes [M, 4], scores [M])``."""
    overlap = box_iou(boxes, boxes).nan_to_num(0.0)
    overlap[(boxes[:, None, :] == boxes[None, :, :]).all(-1)] = 1.0  # identical boxes link, even of zero area
    linked = overlap > iou_threshold
    # connected groups: every box takes the smallest index it reaches, until nothing changes
    group = torch.arange(len(boxes))
    while True:
        reached = torch.where(linked, group[None, :], len(boxes)).amin(1)
        if torch.equal(reached, group):
            break
        group = reached
    fused_boxes, fused_scores = [], []
    for root in group.unique().tolist():
        members = group == root
        weights = scores[members]
        fused_boxes.append((boxes[members] * weights[:, None]).sum(0) / weights.sum())
        fused_scores.append(weights.mean() * min(int(members.sum()), views) / views)
    if not fused_boxes:
        return boxes, scores
    return torch.stack(fused_boxes), torch.stack(fused_scores)


def merge_detections(
    per_view: Sequence[dict[str, Tensor]], merge: str, iou_threshold: float, max_detections: int
) -> dict[str, Tensor]:
    """One image's detections of several views (``boxes``, ``scores``, ``labels`` each) merged as the module
    docstring says; the ``max_detections`` highest scores kept, in decreasing score order."""
    boxes = torch.cat([v["boxes"] for v in per_view])
    scores = torch.cat([v["scores"] for v in per_view])
    labels = torch.cat([v["labels"] for v in per_view])
    if merge == "nms":
        keep = batched_nms(boxes, scores, labels, iou_threshold)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    elif merge == "wbf":
        parts = []
        for label in labels.unique().tolist():
            mask = labels == label
            fused, fused_scores = _weighted_box_fusion(boxes[mask], scores[mask], len(per_view), iou_threshold)
            parts.append((fused, fused_scores, torch.full_like(fused_scores, label, dtype=labels.dtype)))
        if parts:
            boxes, scores, labels = (torch.cat(p) for p in zip(*parts))
    else:
        raise ValueError(f"unknown merge {merge!r}; choose one of {TTA_MERGES}")
    order = scores.argsort(descending=True, stable=True)[:max_detections]
    return {"boxes": boxes[order], "scores": scores[order], "labels": labels[order]}


@contextmanager
def _resized(detector: nn.Module, scale: float):
    """The detector's resize multiplied by ``scale`` inside the block."""
    transform = detector.transform
    min_size, max_size = transform.min_size, transform.max_size
    transform.min_size = tuple(max(1, round(s * scale)) for s in min_size)
    transform.max_size = max(1, round(max_size * scale))
    try:
        yield
    finally:
        transform.min_size, transform.max_size = min_size, max_size


def _mirror(boxes: Tensor, width: int) -> Tensor:
    """Boxes ``[N, 4]`` x1y1x2y2 mirrored left-right in an image ``width`` wide."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


class TestTimeAugmentation:
    """A torchvision detector in eval mode run on several views of each image: ``tta(images) -> results`` with
    the detector's own input (a list of ``[3, H, W]`` tensors) and output (``boxes``, ``scores``, ``labels``
    per image, in the images' coordinates).

    A plain object (not an ``nn.Module``), so that holding one adds nothing to a checkpoint.
    """

    __test__ = False  # not a test class, whatever its name

    def __init__(self, detector: nn.Module, options: TtaOptions):
        if not options.flips or not options.scales:
            raise ValueError("eval.tta needs at least one flip and one scale (plain inference: [none] and [1.0])")
        self.detector = detector
        self.options = options
        self.views = options.views()
        self.max_detections = int(
            getattr(detector, "detections_per_img", None) or detector.roi_heads.detections_per_img
        )

    def __call__(self, images: Sequence[Tensor]) -> list[dict[str, Tensor]]:
        if len(self.views) == 1 and self.views[0] == ("none", 1.0):
            return self.detector(images)
        per_image: list[list[dict[str, Tensor]]] = [[] for _ in images]
        for flip, scale in self.views:
            inputs = [image.flip(-1) for image in images] if flip == "horizontal" else list(images)
            with _resized(self.detector, scale):
                outputs = self.detector(inputs)
            for index, (image, output) in enumerate(zip(images, outputs)):
                if flip == "horizontal":
                    output = {**output, "boxes": _mirror(output["boxes"], image.shape[-1])}
                per_image[index].append(output)
        return [
            merge_detections(views, self.options.merge, self.options.iou_threshold, self.max_detections)
            for views in per_image
        ]
