"""One image of a split and its training instances, in plain values: :class:`ImageRecord`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ImageRecord"]


@dataclass
class ImageRecord:
    """One image and its training instances (after the fixes), in plain values.

    Attributes:
        image_id: the COCO image id.
        file_name: the image's path relative to the split's image folder.
        height, width: its size in pixels after EXIF orientation (as the json says and the check confirmed).
        boxes: float32 ``[N, 4]`` x1, y1, x2, y2 in pixels, clipped to the image.
        labels: int64 ``[N]`` contiguous labels 1..K.
        annotation_ids: int64 ``[N]`` the COCO annotation ids.
        segmentations: the ``N`` COCO segmentations (polygon lists or RLE dicts); empty without masks.
    """

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    annotation_ids: np.ndarray
    segmentations: list[Any] = field(default_factory=list)
