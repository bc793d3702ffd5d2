"""The COCOeval implementations the evaluator can run, and the choice among them.

Three libraries compute COCOeval's numbers: ``hotcoco`` (Rust; its ``COCOeval`` gives pycocotools' arrays
to the last bit, proven by ``tests/test_evaluation_backends_exact.py`` on the cases that break evaluators),
``faster_coco_eval`` (C++ matching and accumulation; equal to about 1e-16) and ``pycocotools`` (the
reference). ``"auto"`` takes the first that is installed and proven exact for the IoU type
(:data:`HOTCOCO_EXACT_IOU_TYPES`); a platform without a hotcoco wheel falls back with one logged line.

:func:`run_cocoeval` evaluates :class:`~sasa_det.evaluation.detection_columns.DetectionColumns` with one of
them and returns a :class:`CocoEvalResult`, what the evaluator's reports read. hotcoco reads the columns
as arrays (no result dict per detection); the others read COCO result dicts.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from pycocotools.coco import COCO

from sasa_det.evaluation.detection_columns import DetectionColumns, coco_result_dicts
from sasa_det.evaluation.options import COCO_BACKENDS

logger = logging.getLogger(__name__)

__all__ = [
    "COCO_BACKENDS",
    "HOTCOCO_EXACT_IOU_TYPES",
    "HOTCOCO_MIN_VERSION",
    "coco_summary_text",
    "CocoEvalResult",
    "GroundTruthCache",
    "resolve_backend",
    "run_cocoeval",
]

#: values of ``eval.backend``: "auto" (the default), then the libraries in the order "auto" tries them
#: IoU types on which hotcoco equals pycocotools on every case of the exactness tests; "auto" uses hotcoco there only
HOTCOCO_EXACT_IOU_TYPES = frozenset({"bbox", "segm"})
#: the oldest hotcoco the exactness tests passed with; "auto" passes over an older one
HOTCOCO_MIN_VERSION = (1, 3)
_PACKAGES = {"hotcoco": "hotcoco", "faster_coco_eval": "faster-coco-eval", "pycocotools": "pycocotools"}


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _unavailable(backend: str) -> Optional[str]:
    """Why ``backend`` cannot run here (not installed, too old), or None when it can."""
    try:
        module = importlib.import_module(backend)
    except ImportError as err:
        return f"{_PACKAGES[backend]} is not installed ({err})"
    if backend == "hotcoco" and _version(getattr(module, "__version__", "0")) < HOTCOCO_MIN_VERSION:
        minimum = ".".join(map(str, HOTCOCO_MIN_VERSION))
        return f"hotcoco {module.__version__} is older than {minimum}, the oldest proven exact"
    return None


def resolve_backend(requested: str, iou_type: str) -> str:
    """The library that evaluates ``iou_type`` for ``eval.backend=requested``.

    ``"auto"``: hotcoco where it is installed and exact for ``iou_type``, else faster_coco_eval, else
    pycocotools; passing over hotcoco is logged in one line. A library named explicitly must be installed.

    Raises ValueError for an unknown name and ImportError, with the fix, for a named library that is missing.
    """
    if requested not in COCO_BACKENDS:
        raise ValueError(f"backend must be one of {COCO_BACKENDS}, got {requested!r}.")
    if requested != "auto":
        reason = _unavailable(requested)
        if reason:
            raise ImportError(f"eval.backend={requested}: {reason}; install it or set eval.backend=auto.")
        return requested
    hotcoco_reason = _unavailable("hotcoco") if iou_type in HOTCOCO_EXACT_IOU_TYPES else "not proven exact for it"
    if hotcoco_reason is None:
        return "hotcoco"
    fallback = "faster_coco_eval" if _unavailable("faster_coco_eval") is None else "pycocotools"
    logger.warning("COCO evaluation (%s): %s; using %s (the same metrics, slower).", iou_type, hotcoco_reason, fallback)
    return fallback


@dataclass
class CocoEvalResult:
    """What one COCOeval run leaves for the reports (any backend; the arrays are pycocotools')."""

    #: the 12 COCO summary metrics (COCOeval.stats)
    stats: np.ndarray
    #: precision [T IoUs, R recalls, K categories, A areas, M max dets], -1 where undefined
    precision: np.ndarray
    #: recall [T, K, A, M], -1 where undefined
    recall: np.ndarray
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    #: category id of each K index
    category_ids: list[int]
    #: the summary as pycocotools prints it (:func:`coco_summary_text`)
    summary: str
    #: the backend's evaluated COCOeval object (on the rank that evaluated; not sent to the other ranks)
    coco_eval: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "coco_eval": None}


#: (AP or AR, IoU threshold or None for 0.50:0.95, area, max detections) of each COCOeval.stats entry
_STAT_LINES = (
    *((True, None, "all", 100), (True, 0.5, "all", 100), (True, 0.75, "all", 100)),
    *((True, None, area, 100) for area in ("small", "medium", "large")),
    *((False, None, "all", m) for m in (1, 10, 100)),
    *((False, None, area, 100) for area in ("small", "medium", "large")),
)


def coco_summary_text(stats: np.ndarray) -> str:
    """The 12 summary lines exactly as pycocotools' ``COCOeval.summarize`` prints them (for every backend)."""
    lines = []
    for value, (ap, iou, area, max_dets) in zip(stats, _STAT_LINES):
        title, kind = ("Average Precision", "(AP)") if ap else ("Average Recall", "(AR)")
        iou_text = "0.50:0.95" if iou is None else f"{iou:0.2f}"
        lines.append(
            f" {title:<18} {kind} @[ IoU={iou_text:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] = {value:0.3f}"
        )
    return "\n".join(lines) + "\n"


class GroundTruthCache:
    """The ground truth as each backend's ``COCO`` object, built on first use and kept (validations repeat)."""

    def __init__(self, coco_gt: COCO) -> None:
        self.coco_gt = coco_gt
        self._built: dict[str, Any] = {"pycocotools": coco_gt}

    def get(self, backend: str) -> Any:
        """The ground truth as ``backend``'s COCO object."""
        if backend not in self._built:
            with contextlib.redirect_stdout(io.StringIO()):
                if backend == "hotcoco":
                    import hotcoco

                    self._built[backend] = hotcoco.COCO(self.coco_gt.dataset)  # copied into Rust
                else:
                    import faster_coco_eval

                    self._built[backend] = faster_coco_eval.COCO(copy.deepcopy(self.coco_gt.dataset))
        return self._built[backend]


def _empty_results(coco_gt: Any) -> Any:
    """A result set without detections (pycocotools' ``loadRes`` fails on an empty list)."""
    coco_dt = type(coco_gt)()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset.get("images", [])),
        "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    coco_dt.createIndex()
    return coco_dt


def _hotcoco_results(coco_gt: Any, detections: DetectionColumns, iou_type: str) -> Any:
    """hotcoco's ``load_res`` of the columns as one float64 [N, 7] array (image id, x, y, w, h, score, category
    id; all exact in float64). For masks, box and area are each mask's (as pycocotools' ``loadRes`` derives them;
    hotcoco's array form would take them from the array)."""
    boxes = detections.boxes_xywh.astype(np.float64)
    if iou_type == "segm" and len(detections):
        from hotcoco import mask as hotcoco_mask

        boxes = hotcoco_mask.to_bbox(detections.masks)
    array = np.column_stack(
        [detections.image_ids, boxes, detections.scores.astype(np.float64), detections.category_ids]
    ).astype(np.float64)
    if iou_type == "bbox":
        return coco_gt.load_res(array)
    coco_dt = coco_gt.load_res(array, segmentation=detections.masks)
    if len(detections):
        from hotcoco import mask as hotcoco_mask

        areas = np.asarray(hotcoco_mask.area(detections.masks), dtype=np.float64)
        coco_dt.update_anns(ids=np.arange(1, len(detections) + 1), area=areas)
    return coco_dt


def run_cocoeval(
    backend: str, ground_truth: GroundTruthCache, detections: DetectionColumns, iou_type: str, image_ids: list[int]
) -> CocoEvalResult:
    """COCOeval (evaluate, accumulate, summarize) of ``detections`` on ``image_ids`` with ``backend``.

    ``detections`` are ordered by image, each image's in the detector's order (ties in score are broken
    by it, as in a results file).
    """
    coco_gt = ground_truth.get(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "hotcoco":
            import hotcoco

            coco_eval = hotcoco.COCOeval(coco_gt, _hotcoco_results(coco_gt, detections, iou_type), iou_type)
        else:
            results = coco_result_dicts(detections, iou_type)
            coco_dt = coco_gt.loadRes(results) if results else _empty_results(coco_gt)
            if backend == "pycocotools":
                from pycocotools.cocoeval import COCOeval

                coco_eval = COCOeval(coco_gt, coco_dt, iouType=iou_type)
            else:
                import faster_coco_eval

                coco_eval = faster_coco_eval.COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=print)
        coco_eval.params.imgIds = list(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    params = coco_eval.params
    stats = np.asarray(coco_eval.stats, dtype=np.float64)[:12]
    return CocoEvalResult(
        stats=stats,
        precision=np.asarray(coco_eval.eval["precision"]),
        recall=np.asarray(coco_eval.eval["recall"]),
        iou_thresholds=np.asarray(params.iouThrs, dtype=np.float64),
        recall_thresholds=np.asarray(params.recThrs, dtype=np.float64),
        category_ids=[int(c) for c in params.catIds],
        summary=coco_summary_text(stats),
        coco_eval=coco_eval,
    )
