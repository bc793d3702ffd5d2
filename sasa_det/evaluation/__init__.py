"""COCO evaluation (bbox and segm, distributed-safe) and drawing of predictions."""

from sasa_det.evaluation.coco_evaluator import (
    COCO_BACKENDS,
    IOU_TYPES,
    STAT_NAMES,
    CocoEvaluator,
    EvalOptions,
)
from sasa_det.evaluation.dataset_drawing import save_dataset_images
from sasa_det.evaluation.detection_columns import DetectionColumns, RankResults, merge_rank_results
from sasa_det.evaluation.error_analysis import ERROR_KINDS, ErrorAnalysis, analyze_errors, write_error_analysis
from sasa_det.evaluation.evaluation_file import evaluation_record, read_evaluation_json, write_evaluation_json
from sasa_det.evaluation.pr_curves import plot_pr_curves
from sasa_det.evaluation.test_time_augmentation import TestTimeAugmentation, TtaOptions
from sasa_det.evaluation.visualize import (
    draw_detections,
    save_detection_grid,
    save_png,
    save_prediction_grid,
    to_uint8_image,
)

__all__ = [
    "COCO_BACKENDS",
    "CocoEvaluator",
    "ERROR_KINDS",
    "ErrorAnalysis",
    "EvalOptions",
    "IOU_TYPES",
    "STAT_NAMES",
    "TestTimeAugmentation",
    "TtaOptions",
    "DetectionColumns",
    "analyze_errors",
    "draw_detections",
    "evaluation_record",
    "merge_rank_results",
    "plot_pr_curves",
    "RankResults",
    "read_evaluation_json",
    "save_dataset_images",
    "save_detection_grid",
    "save_png",
    "save_prediction_grid",
    "to_uint8_image",
    "write_error_analysis",
    "write_evaluation_json",
]
