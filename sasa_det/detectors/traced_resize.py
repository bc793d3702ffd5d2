"""The detectors' evaluation resize, recorded in an exported graph with PyTorch's rounding.

torchvision's ``GeneralizedRCNNTransform`` (eval mode) scales an ``H × W`` image by
``s = min(min_size / min(H, W), max_size / max(H, W))`` and ``F.interpolate`` makes it
``floor(H·s) × floor(W·s)``. In PyTorch both steps are Python float (float64) arithmetic. While tracing
(``torch.jit.trace`` and the TorchScript-based ONNX exporter) torchvision computes ``s`` as a float32 tensor and
``F.interpolate`` multiplies in float32, so wherever ``H·s`` lies within float32 rounding of an integer the
recorded graph resizes to one pixel more or less than PyTorch: with ``min_size=128`` a 103-pixel side gives
``103 · (128/103) = 127.99999999999999`` in float64 (127 px) but ``128.0`` in float32 (128 px), and the
detections of the two differ.

:class:`TracedResizeTransform` records the same operations in float64 (the ratios as tensors, not Python
scalars, which the ONNX exporter would turn into float32 constants) and interpolates to that explicit size, so the
exported graph resizes every image to PyTorch's size; outside tracing it is torchvision's transform unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Optional

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torch.onnx import operators
from torchvision.models.detection.transform import GeneralizedRCNNTransform

__all__ = ["TracedResizeTransform", "resized_size", "traced_resize"]


def resized_size(image: Tensor, min_size: float, max_size: float) -> Tensor:
    """``int64 [2]``: the ``(height, width)`` that torchvision's eval resize gives ``image`` (``[..., H, W]``),
    computed from the image's shape as tensors in float64, so that a trace records it for any size."""
    shape = operators.shape_as_tensor(image)[-2:].to(torch.float64)
    limits = torch.tensor([float(min_size), float(max_size)], dtype=torch.float64)
    scale = (limits / torch.stack([shape.min(), shape.max()])).min()
    return torch.floor(shape * scale).to(torch.int64)


class TracedResizeTransform(GeneralizedRCNNTransform):
    """torchvision's transform whose eval resize, when traced, is recorded with PyTorch's rounding (module doc).

    Training, targets and ``fixed_size`` take torchvision's path, as does every call outside tracing.
    """

    @classmethod
    def like(cls, transform: GeneralizedRCNNTransform) -> TracedResizeTransform:
        """A copy of ``transform``'s settings (sizes, normalisation, padding, mode)."""
        copy = cls(
            transform.min_size,
            transform.max_size,
            transform.image_mean,
            transform.image_std,
            size_divisible=transform.size_divisible,
            fixed_size=transform.fixed_size,
            _skip_resize=transform._skip_resize,
        )
        return copy.train(transform.training)

    def resize(
        self, image: Tensor, target: Optional[dict[str, Tensor]] = None
    ) -> tuple[Tensor, Optional[dict[str, Tensor]]]:
        """torchvision's resize; traced in eval mode, to :func:`resized_size` by bilinear interpolation."""
        if self.training or target is not None or self.fixed_size is not None or not torchvision._is_tracing():
            return super().resize(image, target)
        size = resized_size(image, self.min_size[-1], self.max_size)
        resized = F.interpolate(image[None], size=[size[0], size[1]], mode="bilinear", align_corners=False)
        return resized[0], target


@contextlib.contextmanager
def traced_resize(detector: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``detector.transform`` is a :class:`TracedResizeTransform` of the same settings (the
    original is put back after); yields the detector. For recording a graph with ``torch.jit.trace`` or
    ``torch.onnx.export``."""
    original = detector.transform
    detector.transform = TracedResizeTransform.like(original)
    try:
        yield detector
    finally:
        detector.transform = original
