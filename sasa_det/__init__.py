"""Object detection and instance segmentation with self-attention backbones on PyTorch Lightning.

``sasa_det.Predictor`` is imported on first use, so ``import sasa_det`` stays light (no torch).
"""

__all__ = ["Predictor"]


def __getattr__(name: str):
    if name == "Predictor":
        from sasa_det.engine.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'sasa_det' has no attribute {name!r}")
