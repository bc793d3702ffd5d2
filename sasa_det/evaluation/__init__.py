"""COCO evaluation (bbox and segm, distributed-safe, through an exact COCOeval backend), its options, the error
analysis, test-time augmentation and the drawing of predictions.

The names below are imported from their modules on first use, so that the options load without torch.
"""

from sasa_det.lazy_names import lazy_names

_HOME = {
    "COCO_BACKENDS": "options",
    "CocoEvaluator": "coco_evaluator",
    "DetectionColumns": "detection_columns",
    "ERROR_KINDS": "error_analysis",
    "ErrorAnalysis": "error_analysis",
    "EvalOptions": "options",
    "IOU_TYPES": "options",
    "RankResults": "detection_columns",
    "STAT_NAMES": "coco_evaluator",
    "TestTimeAugmentation": "test_time_augmentation",
    "TtaOptions": "options",
    "analyze_errors": "error_analysis",
    "draw_detections": "visualize",
    "evaluation_record": "evaluation_file",
    "merge_rank_results": "detection_columns",
    "plot_pr_curves": "pr_curves",
    "read_evaluation_json": "evaluation_file",
    "save_dataset_images": "dataset_drawing",
    "save_detection_grid": "visualize",
    "save_png": "visualize",
    "save_prediction_grid": "visualize",
    "to_uint8_image": "visualize",
    "write_error_analysis": "error_analysis",
    "write_evaluation_json": "evaluation_file",
}

__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_names(__name__, _HOME, globals())
