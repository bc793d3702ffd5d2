"""What evaluation does: the ``eval`` section of a detection config (``EvalOptions``, with its test-time
augmentation ``TtaOptions``). No torch: a config is checked without it."""

from __future__ import annotations

from dataclasses import dataclass, field

from sasa_det.choices import OptionError, choice

__all__ = ["COCO_BACKENDS", "IOU_TYPES", "SCORE_THRESHOLD", "TTA_FLIPS", "TTA_MERGES", "EvalOptions", "TtaOptions"]

#: detections scoring below this are not evaluated (COCO practice)
SCORE_THRESHOLD = 0.05

#: IoU types COCOeval evaluates
IOU_TYPES = ("bbox", "segm")

#: ``eval.backend``: the COCOeval library (``auto``: the fastest one proven exact that is installed)
COCO_BACKENDS = ("auto", "hotcoco", "faster_coco_eval", "pycocotools")

#: values of ``eval.tta.flips``
TTA_FLIPS = ("none", "horizontal")
#: values of ``eval.tta.merge``
TTA_MERGES = ("wbf", "nms")


@dataclass
class TtaOptions:
    """Test-time augmentation in ``tools/eval.py`` and ``tools/predict.py``: the ``eval.tta`` section. The views
    are every (flip, scale) pair; the default, one view, is plain inference."""

    #: flips, each a view: "none" | "horizontal"
    flips: list[str] = choice(TTA_FLIPS, default_factory=lambda: ["none"])
    #: factors of the model's resize (model.min_size / max_size), each a view: [1.0] = the model's own size
    scales: list[float] = field(default_factory=lambda: [1.0])
    #: how the views' detections are merged: "wbf" (weighted box fusion) | "nms" (NMS over their union)
    merge: str = choice(TTA_MERGES, default="wbf")
    #: IoU above which same-class boxes fuse (wbf) or suppress each other (nms)
    iou_threshold: float = 0.55

    def validate(self) -> None:
        """At least one flip and one positive scale; the merge IoU in (0, 1]."""
        if not self.flips or not self.scales or any(not float(s) > 0 for s in self.scales):
            raise OptionError(
                "scales",
                f"{{key}}: eval.tta needs at least one flip and positive scales, got flips={list(self.flips)}, "
                f"scales={list(self.scales)} (plain inference: flips=[none], scales=[1.0])",
            )
        if not 0.0 < self.iou_threshold <= 1.0:
            raise OptionError("iou_threshold", f"{{key}} must be in (0, 1], got {self.iou_threshold}")

    def views(self) -> list[tuple[str, float]]:
        """The ``(flip, scale)`` views, scales outer."""
        return [(flip, float(scale)) for scale in self.scales for flip in self.flips]


@dataclass
class EvalOptions:
    """How detections are evaluated and drawn: the ``eval`` section of an experiment config (validation during
    training, ``tools/eval.py``, ``tools/predict.py``)."""

    #: detections below this score are not evaluated (COCO practice)
    score_threshold: float = SCORE_THRESHOLD
    #: "bbox" / "segm"; empty = bbox, plus segm for mask_rcnn
    iou_types: list[str] = choice(IOU_TYPES, default_factory=list)
    #: validation images drawn after training, each beside its ground truth, in predictions.png (0 = none)
    save_visualization: int = 4
    #: score threshold for drawn predictions
    draw_threshold: float = 0.5
    #: COCOeval library: "auto" (hotcoco, else faster_coco_eval, else pycocotools) | "hotcoco" |
    #: "faster_coco_eval" | "pycocotools"; all give pycocotools' metrics
    backend: str = choice(COCO_BACKENDS, default="auto")
    #: after tools/eval.py, also write the confusion matrix and false positives by kind (errors/; eval.py --errors)
    error_analysis: bool = False
    #: IoU at which a detection matches a ground truth in the error analysis
    error_iou_threshold: float = 0.5
    #: detections below this score are left out of the error analysis (ultralytics draws its matrix at 0.25)
    error_score_threshold: float = 0.3
    #: test-time augmentation of tools/eval.py (reported beside plain inference) and tools/predict.py
    tta: TtaOptions = field(default_factory=TtaOptions)

    def validate(self) -> None:
        """The error analysis' thresholds lie in [0, 1]."""
        for name in ("error_iou_threshold", "error_score_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise OptionError(name, f"{{key}} must be in [0, 1], got {getattr(self, name)}")
