"""Batches: collation for detection (images of different sizes stay a list) and the batch-size rule."""

from __future__ import annotations

from typing import Any

import torch

from sasa_det.choices import OptionError

__all__ = ["check_batch_sizes", "collate_detection"]


def check_batch_sizes(batch_size: int, val_batch_size: int | None) -> None:
    """Training and validation images per device are >= 1 (``None``: the validation size follows training).

    Raises:
        OptionError: naming the option (``{key}`` in its message stands for its config key).
    """
    if batch_size < 1:
        raise OptionError("batch_size", f"{{key}} must be >= 1, got {batch_size}")
    if val_batch_size is not None and val_batch_size < 1:
        raise OptionError("val_batch_size", f"{{key}} must be >= 1, got {val_batch_size}")


def collate_detection(
    batch: list[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Turn ``[(image, target), ...]`` into ``(images, targets)`` lists without stacking.

    Images ([3, H_i, W_i]) differ in size; torchvision's detectors batch (pad) them themselves.
    """
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets
