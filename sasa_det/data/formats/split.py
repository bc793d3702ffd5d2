"""Split one COCO instances json into train and validation files by images, reproducibly."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from sasa_det.data.coco.json_checks import check_coco_dict
from sasa_det.data.coco.problems import DatasetError, raise_if_problems

__all__ = ["split_coco"]


def split_coco(
    ann_file: str | os.PathLike, val_fraction: float, seed: int, out_dir: str | os.PathLike
) -> dict[str, Any]:
    """Write ``train.json`` and ``val.json`` into ``out_dir``: a random ``val_fraction`` of the images
    (with their annotations) for validation, the rest for training.

    The images are shuffled by ``random.Random(seed)`` in ascending id order, so the same file, fraction
    and seed give the same split. Both files keep every category, ``info`` and ``licenses``, and the
    same ``file_name`` values: both splits read from the same image folder.

    Returns:
        ``{"train_ann", "val_ann", "train_images": count, "val_images": count}``.

    Raises:
        DatasetError: a fraction outside (0, 1), fewer than two images, or a problem in the file.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"--val-fraction must be in (0, 1), got {val_fraction}.")
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path} is not valid JSON: {err}.") from err
    raise_if_problems(check_coco_dict(data, path), str(path), out_dir, " (nothing was written)")
    ids = sorted(img["id"] for img in data["images"])
    if len(ids) < 2:
        raise DatasetError(f"{path}: {len(ids)} image(s) cannot be split into train and val.")
    random.Random(seed).shuffle(ids)
    num_val = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    val_ids = set(ids[:num_val])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    for split, keep in (("train", lambda i: i not in val_ids), ("val", lambda i: i in val_ids)):
        subset = {
            **{k: v for k, v in data.items() if k not in ("images", "annotations")},
            "images": [img for img in data["images"] if keep(img["id"])],
            "annotations": [ann for ann in data["annotations"] if keep(ann["image_id"])],
        }
        target = out / f"{split}.json"
        target.write_text(json.dumps(subset), encoding="utf-8")
        result[f"{split}_ann"] = str(target)
        result[f"{split}_images"] = len(subset["images"])
    return result
