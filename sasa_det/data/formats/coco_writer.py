"""What the dataset converters share: finding images, building and writing a COCO instances dict.

A converter collects every problem of its input (as :class:`~sasa_det.data.coco.problems.Problem`)
and writes nothing unless there are none; what it writes passes
:func:`~sasa_det.data.coco.json_checks.check_coco_dict`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sasa_det.data.coco.json_checks import check_coco_dict
from sasa_det.data.coco.problems import Problem, raise_if_problems

__all__ = ["IMAGE_EXTENSIONS", "CocoBuilder", "find_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def find_image(image_dir: Path, relative_stem: Path) -> Path | None:
    """The image ``image_dir / relative_stem.<ext>`` for any known extension (either case), or None."""
    for ext in IMAGE_EXTENSIONS:
        for candidate in (ext, ext.upper()):
            path = image_dir / relative_stem.with_name(relative_stem.name + candidate)
            if path.is_file():
                return path
    return None


class CocoBuilder:
    """Accumulates images, annotations and problems; writes the COCO json only when there is no problem.

    Args:
        class_names: category names; category ids are ``1..K`` in this order.
        source: what is converted (named in error messages).
    """

    def __init__(self, class_names: Sequence[str], source: str) -> None:
        self.categories = [{"id": i + 1, "name": name, "supercategory": "none"} for i, name in enumerate(class_names)]
        self.category_ids = {name: i + 1 for i, name in enumerate(class_names)}
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.source = source

    def add_image(self, file_name: str, height: int, width: int) -> int:
        """Add an image (``file_name`` relative to the image folder); returns its id (1, 2, ...)."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)})
        return image_id

    def add_annotation(
        self,
        image_id: int,
        category_id: int,
        box_xyxy: Sequence[float],
        iscrowd: int = 0,
        segmentation: Any = None,
        area: float | None = None,
    ) -> None:
        """Add an instance from a pixel ``[x1, y1, x2, y2]`` box (area defaults to the box's)."""
        x1, y1, x2, y2 = (float(v) for v in box_xyxy)
        ann = {
            "id": len(self.annotations) + 1,
            "image_id": image_id,
            "category_id": int(category_id),
            "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
            "area": round(float(area) if area is not None else (x2 - x1) * (y2 - y1), 3),
            "iscrowd": int(iscrowd),
        }
        if segmentation is not None:
            ann["segmentation"] = segmentation
        self.annotations.append(ann)

    def problem(self, file: str | os.PathLike, record: str, message: str, fix: str) -> None:
        """Record a problem of the input."""
        self.problems.append(Problem(str(file), record, message, fix))

    def dataset(self) -> dict[str, Any]:
        """The COCO instances dict."""
        return {
            "info": {"description": f"converted from {self.source}"},
            "licenses": [],
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
        }

    def write(self, out: str | os.PathLike) -> dict[str, Any]:
        """Check and write the json to ``out``; returns the dict.

        Raises:
            DatasetError: listing every problem of the input (nothing is written then).
        """
        data = self.dataset()
        raise_if_problems(self.problems, self.source, Path(out).parent, " (nothing was written)")
        raise_if_problems(
            check_coco_dict(data, out, with_masks=False), str(out), Path(out).parent, " (nothing was written)"
        )
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(data), encoding="utf-8")
        return data
