"""Training engine: optimizers and schedules, LightningModules, callbacks, train/evaluate/predict entry points."""

from sasa_det.engine.optim import build_optimizer, build_scheduler
from sasa_det.engine.detection_module import DetectionModule
from sasa_det.engine.classification_module import ClassificationModule
from sasa_det.engine.runner import evaluate, load_module, predict, train

__all__ = [
    "ClassificationModule",
    "DetectionModule",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "load_module",
    "predict",
    "train",
]
