"""COCO evaluation (bbox and segm, distributed-safe) and drawing of predictions."""

from sasa_det.evaluation.coco_evaluator import COCO_BACKENDS, STAT_NAMES, CocoEvaluator, merge_rank_results
from sasa_det.evaluation.pr_curves import plot_pr_curves
from sasa_det.evaluation.visualize import draw_detections, save_detection_grid, save_prediction_grid, to_uint8_image

__all__ = [
    "COCO_BACKENDS",
    "STAT_NAMES",
    "CocoEvaluator",
    "draw_detections",
    "merge_rank_results",
    "plot_pr_curves",
    "save_detection_grid",
    "save_prediction_grid",
    "to_uint8_image",
]
