"""Predicting over image files, folders and globs: drawn PNGs, a COCO results json, and a report of what failed.

Output names keep the inputs' relative structure: every image is written as its path relative to the
common folder of all inputs, with the suffix ``.png`` (``a/x.jpg`` and ``b/x.jpg`` become ``a/x.png`` and
``b/x.png``; ``x.jpg`` beside ``x.png`` become ``x.jpg.png`` and ``x.png.png``), so no two inputs overwrite
each other.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["IMAGE_SUFFIXES", "PredictionReport", "expand_image_inputs", "output_names", "predict_files"]

logger = logging.getLogger(__name__)

#: File suffixes taken as images when a folder is given.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


@dataclass
class PredictionReport:
    """What :func:`predict_files` did.

    Attributes:
        written: the drawn PNGs, in input order.
        failed: ``(input, reason)`` of every input that could not be read or did not exist.
        empty: images with no detection at or above the score threshold.
        detections_json: the COCO results file (``None`` when no image was read).
    """

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)
    detections_json: Path | None = None


def expand_image_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files named by ``inputs``: files as given, folders searched recursively for
    :data:`IMAGE_SUFFIXES`, glob patterns (``**`` allowed) expanded; duplicates removed, order kept.

    Returns ``(files, problems)``; ``problems`` lists ``(input, reason)`` for inputs that name nothing.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append((str(item), f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(str(item)):
            found = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
            if not found:
                problems.append((str(item), "pattern matches no file"))
            files.extend(found)
        else:
            problems.append((str(item), "no such file or folder"))
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values()), problems


def output_names(files: Sequence[Path]) -> list[Path]:
    """Relative PNG names for ``files`` that keep their folder structure and never collide (module docstring)."""
    if not files:
        return []
    resolved = [f.resolve() for f in files]
    root = Path(os.path.commonpath([str(r.parent) for r in resolved]))
    relative = [r.relative_to(root) for r in resolved]
    stems = [r.with_suffix(".png") for r in relative]
    clashes = {s for s in stems if stems.count(s) > 1}
    return [r.with_name(r.name + ".png") if s in clashes else s for r, s in zip(relative, stems)]


def _coco_results(image_id: int, result: dict[str, Any]) -> list[dict[str, Any]]:
    entries = []
    boxes = result["boxes"].tolist()
    masks = result.get("masks")
    rles = None
    if masks is not None and len(masks):
        import numpy as np
        from pycocotools import mask as mask_utils

        binary = np.asfortranarray((masks > 0.5).numpy().transpose(1, 2, 0).astype(np.uint8))
        rles = mask_utils.encode(binary)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        entry = {
            "image_id": image_id,
            "category_id": int(result["labels"][i]),
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(float(result["scores"][i]), 5),
        }
        if rles is not None:
            entry["segmentation"] = {"size": rles[i]["size"], "counts": rles[i]["counts"].decode("ascii")}
        entries.append(entry)
    return entries


def predict_files(
    predictor, inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, progress: bool = True
) -> PredictionReport:
    """Run a :class:`~sasa_det.engine.inference.predictor.Predictor` over files, folders and globs.

    Writes into ``out_dir``: one PNG per image with boxes, masks and class names drawn (names from
    :func:`output_names`), ``detections.json`` (COCO results: ``image_id``, ``category_id`` = label,
    ``bbox`` xywh, ``score``, RLE ``segmentation`` for Mask R-CNN) and ``images.json`` (the COCO ``images``
    with each input's path, and the ``categories``), which together load with pycocotools. An unreadable
    input is logged and skipped; images without detections are logged.
    """
    from PIL import Image
    from tqdm import tqdm

    from sasa_det.data.image_io import ImageReadError
    from sasa_det.engine.inference.predictor import image_to_tensor
    from sasa_det.evaluation import draw_detections

    out = Path(out_dir)
    files, problems = expand_image_inputs(inputs)
    report = PredictionReport(failed=list(problems))
    for item, reason in problems:
        logger.error("%s: %s", item, reason)
    images_meta: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    for file, name in tqdm(list(zip(files, output_names(files))), desc="predict", unit="image", disable=not progress):
        try:
            image = image_to_tensor(file)
        except ImageReadError as err:
            logger.error("skipped: %s", err)
            report.failed.append((str(file), str(err)))
            continue
        result = predictor.predict_tensors([image])[0]
        image_id = len(images_meta) + 1
        images_meta.append({"id": image_id, "file_name": str(file), "height": image.shape[1], "width": image.shape[2]})
        detections.extend(_coco_results(image_id, result))
        if not len(result["boxes"]):
            logger.warning(
                "%s: no detection scores %.2f or more (lower --score-threshold to see weaker ones)",
                file,
                predictor.score_threshold,
            )
            report.empty.append(file)
        drawn = draw_detections(
            image, result, class_names=predictor.class_names, score_threshold=predictor.score_threshold, box_width=2
        )
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(target)
        report.written.append(target)
    if images_meta:
        out.mkdir(parents=True, exist_ok=True)
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(predictor.class_names)]
        (out / "images.json").write_text(json.dumps({"images": images_meta, "categories": categories}, indent=1))
        report.detections_json = out / "detections.json"
        report.detections_json.write_text(json.dumps(detections))
    return report
