"""Object detection and instance segmentation with self-attention backbones on PyTorch Lightning.

``sasa_det.Predictor`` and ``sasa_det.load_exported`` (running an ONNX or TorchScript export) are imported on
first use, so ``import sasa_det`` stays light (no torch).
"""

__all__ = ["Predictor", "load_exported"]


def __getattr__(name: str):
    if name == "Predictor":
        from sasa_det.engine.predictor import Predictor

        return Predictor
    if name == "load_exported":
        from sasa_det.engine.export import load_exported

        return load_exported
    raise AttributeError(f"module 'sasa_det' has no attribute {name!r}")
