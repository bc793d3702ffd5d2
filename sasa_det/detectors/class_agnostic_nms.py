"""Class-agnostic non-maximum suppression of a detector's final detections.

torchvision's detectors suppress overlapping boxes per class (``batched_nms``), so one object scored for
two classes comes out twice, at the same coordinates (RetinaNet regresses one box per anchor for all
classes). With ``model.class_agnostic_nms: true`` the per-class survivors go through one more NMS that
ignores the class, as mmdetection's ``nms.class_agnostic``: of boxes overlapping by more than the
detector's NMS IoU threshold only the best-scored stays, whatever its class. Use it when classes exclude
each other (an object is one thing or the other); leave it off when one object may carry several labels
or objects of different classes overlap heavily (a rider on a horse).
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.ops import nms

__all__ = ["apply_class_agnostic_nms", "class_agnostic_nms", "nms_threshold"]

_PER_DETECTION = ("boxes", "scores", "labels", "masks")


def class_agnostic_nms(detections: dict[str, Tensor], iou_threshold: float) -> dict[str, Tensor]:
    """One image's ``{"boxes" [D, 4], "scores" [D], "labels" [D][, "masks" [D, ...]]}`` after NMS across
    classes, highest score first (other keys pass through)."""
    keep = nms(detections["boxes"], detections["scores"], iou_threshold)
    return {key: value[keep] if key in _PER_DETECTION else value for key, value in detections.items()}


def nms_threshold(model: nn.Module) -> float:
    """The IoU threshold of the detector's own NMS (RetinaNet's ``nms_thresh``, the R-CNN box head's)."""
    if hasattr(model, "nms_thresh"):
        return float(model.nms_thresh)
    return float(model.roi_heads.nms_thresh)


def apply_class_agnostic_nms(model: nn.Module) -> nn.Module:
    """Make ``model``'s eval-mode detections class-agnostically suppressed (a forward hook); returns ``model``."""
    threshold = nms_threshold(model)

    def hook(module: nn.Module, inputs, output):
        if isinstance(output, list):  # eval mode: one dict per image (train mode returns the loss dict)
            return [class_agnostic_nms(detections, threshold) for detections in output]
        return output

    model.register_forward_hook(hook)
    model.class_agnostic_nms = True
    return model
