"""Drawing a detection dataset's images with their ground truth (boxes, masks, class names), one PNG each."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from sasa_det.evaluation.visualize import draw_detections, save_png

__all__ = ["save_dataset_images"]


def save_dataset_images(
    dataset: Sequence, out_dir: str | os.PathLike, count: int, class_names: Sequence[str] | None = None
) -> list[Path]:
    """Draw the first ``count`` items ``(image, target)`` of ``dataset`` as they come out of its transforms,
    with the target's boxes, masks and class names, to ``out_dir/<image_id>.png``; returns the written paths."""
    out_dir = Path(out_dir)
    written = []
    for index in range(min(int(count), len(dataset))):
        image, target = dataset[index]
        truth = {key: target[key] for key in ("boxes", "labels", "masks") if key in target}
        written.append(save_png(draw_detections(image, truth, class_names), out_dir / f"{int(target['image_id'])}.png"))
    return written
