"""A tiny COCO dataset on disk and ways to corrupt it, shared by the data-validation tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 24, 32


def pixels(seed: int, height: int = H, width: int = W) -> np.ndarray:
    """Deterministic uint8 RGB noise."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def base_dataset() -> dict:
    """Three 24x32 images, one polygon annotation each, categories 1..3."""
    boxes = {1: [2, 2, 10, 8], 2: [4, 4, 8, 8], 3: [10, 6, 12, 10]}
    annotations = []
    for i, (x, y, w, h) in boxes.items():
        polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
        annotations.append(
            {
                "id": i,
                "image_id": i,
                "category_id": i,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
                "segmentation": [polygon],
            }
        )
    return {
        "images": [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in (1, 2, 3)],
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in ((1, "cat"), (2, "dog"), (3, "bird"))],
    }


def write_dataset(root: Path, data: dict | None = None) -> tuple[Path, Path]:
    """Write the base images and ``data`` (default :func:`base_dataset`); returns (ann_file, image_dir)."""
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for i in (1, 2, 3):
        Image.fromarray(pixels(i)).save(image_dir / f"{i}.png")
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(base_dataset() if data is None else data))
    return ann_file, image_dir


def jpeg_bytes(array: np.ndarray, orientation: int = 1, mode: str = "RGB") -> bytes:
    """A JPEG of ``array`` (converted to ``mode``) with an EXIF orientation tag."""
    image = Image.fromarray(array).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()
