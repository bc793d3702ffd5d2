"""Batch collation for detection: images of different sizes stay a list."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["collate_detection"]


def collate_detection(
    batch: list[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Turn ``[(image, target), ...]`` into ``(images, targets)`` lists without stacking.

    Images ([3, H_i, W_i]) differ in size; torchvision's detectors batch (pad) them themselves.
    """
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets
