"""Object detection and instance segmentation with self-attention backbones on PyTorch Lightning.

``sasa_det.Predictor`` and ``sasa_det.load_exported`` (running an ONNX or TorchScript export) are imported on
first use, so ``import sasa_det`` stays light (no torch).
"""

from sasa_det.lazy_names import lazy_names

__all__, __getattr__, __dir__ = lazy_names(
    __name__, globals(), {"engine.inference.predictor": "Predictor", "engine.inference.export": "load_exported"}
)
