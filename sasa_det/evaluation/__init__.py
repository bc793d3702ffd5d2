"""COCO evaluation (bbox and segm, distributed-safe, through an exact COCOeval backend), its options, the error
analysis, test-time augmentation and the drawing of predictions.
"""

from sasa_det.lazy_names import lazy_names

_PROVIDED_BY = {
    "options": "COCO_BACKENDS EvalOptions IOU_TYPES TtaOptions",
    "coco_evaluator": "CocoEvaluator STAT_NAMES",
    "detection_columns": "DetectionColumns RankResults merge_rank_results",
    "error_analysis": "ERROR_KINDS ErrorAnalysis analyze_errors write_error_analysis",
    "test_time_augmentation": "TestTimeAugmentation",
    "visualize": "draw_detections save_detection_grid save_png save_prediction_grid to_uint8_image",
    "evaluation_file": "evaluation_record read_evaluation_json write_evaluation_json",
    "pr_curves": "plot_pr_curves",
    "dataset_drawing": "save_dataset_images",
}
__all__, __getattr__, __dir__ = lazy_names(__name__, globals(), _PROVIDED_BY)
