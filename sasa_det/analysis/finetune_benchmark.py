"""What the recipe for one's own data reaches from each starting point, on a dataset it was not tuned on.

:func:`make_letters_voc` draws a small two-class Pascal VOC set of letters (``A``, ``B``) in random fonts sizes,
colours and places on textured backgrounds; :func:`run_finetune_benchmark` converts it with the project's VOC
converter, trains the caller's recipe (``configs/custom/retinanet_small_cpu.yaml``) for the same number of
steps from each starting point (from scratch, ``model.init_from=demo``, ...) and reports the validation mAP of
each, with a progress line per run.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["STARTS", "finetune_table", "make_letters_voc", "run_finetune_benchmark"]

#: starting points: name -> ``model.init_from`` (None: from scratch)
STARTS = {"scratch": None, "demo": "demo"}
_IMAGE_SIZE = (320, 240)  # width, height
_LETTERS = ("A", "B")


def _background(rng: np.random.Generator) -> Image.Image:
    """A gradient with noise and a few blurred blobs: letters must be told from texture, not from a flat field."""
    width, height = _IMAGE_SIZE
    low, high = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, width)[None, :, None]
    image = low + (high - low) * ramp + rng.normal(0, 18, (height, width, 3))
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 6))):
        x, y, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(8, 40))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return canvas


def _draw_letters(canvas: Image.Image, rng: np.random.Generator) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Draw 1-4 non-overlapping letters; their names and pixel boxes ``(x0, y0, x1, y1)``."""
    draw, placed = ImageDraw.Draw(canvas), []
    for _ in range(int(rng.integers(1, 5))):
        letter = _LETTERS[int(rng.integers(len(_LETTERS)))]
        font = ImageFont.load_default(size=int(rng.integers(28, 80)))
        for _ in range(30):
            x, y = int(rng.integers(0, _IMAGE_SIZE[0] - 30)), int(rng.integers(0, _IMAGE_SIZE[1] - 30))
            box = draw.textbbox((x, y), letter, font=font)
            inside = box[2] < _IMAGE_SIZE[0] and box[3] < _IMAGE_SIZE[1]
            if inside and all(box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1] for _, b in placed):
                colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                light = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 128
                outline = (0, 0, 0) if light else (255, 255, 255)  # the stroke contrasts with the fill
                draw.text((x, y), letter, font=font, fill=colour, stroke_width=2, stroke_fill=outline)
                placed.append((letter, box))
                break
    return placed


def _voc_xml(image_id: str, objects: list[tuple[str, tuple[int, int, int, int]]]) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(root, "size")
    for tag, value in zip(("width", "height", "depth"), (*_IMAGE_SIZE, 3)):
        ET.SubElement(size, tag).text = str(value)
    for name, (x0, y0, x1, y1) in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0, y0, x1, y1)):
            ET.SubElement(box, tag).text = str(value)
    return ET.ElementTree(root)


def make_letters_voc(root: str | Path, num_train: int = 120, num_val: int = 30, seed: int = 7) -> Path:
    """A Pascal VOC tree at ``root`` (``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/{train,val}.txt``) of
    ``num_train + num_val`` 320×240 images with 1-4 letters A/B each; deterministic by ``seed``. Returns ``root``."""
    root = Path(root)
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"{index:05d}" for index in range(num_train + num_val)]
    for image_id in ids:
        canvas = _background(rng)
        objects = _draw_letters(canvas, rng)
        canvas.save(root / "JPEGImages" / f"{image_id}.jpg", quality=92)
        _voc_xml(image_id, objects).write(root / "Annotations" / f"{image_id}.xml")
    (root / "ImageSets/Main/train.txt").write_text("\n".join(ids[:num_train]) + "\n")
    (root / "ImageSets/Main/val.txt").write_text("\n".join(ids[num_train:]) + "\n")
    return root


def _coco_splits(voc: Path, out: Path) -> dict[str, str]:
    """Convert the VOC tree's train and val lists with the project's converter; the four data paths."""
    from sasa_det.data.formats.convert_voc import convert_voc

    paths = {}
    for split in ("train", "val"):
        ann = out / f"{split}.json"
        convert_voc(voc / "Annotations", voc / "JPEGImages", ann, list(_LETTERS), voc / f"ImageSets/Main/{split}.txt")
        paths[f"data.{split}_images"], paths[f"data.{split}_ann"] = str(voc / "JPEGImages"), str(ann)
    return paths


def run_finetune_benchmark(
    config: str | Path,
    out: str | Path,
    steps: int = 600,
    starts: Sequence[str] = tuple(STARTS),
    extra_overrides: Sequence[str] = (),
    progress: Callable[[str], None] = print,
    demo_config: str | Path | None = None,
) -> list[dict]:
    """Train ``config`` (the recipe for one's own data) ``steps`` steps on the letters set from each of ``starts``
    (names of :data:`STARTS`), one run each under ``out/<start>``; a row per run: start, mAP, AP50, seconds.
    A finished run (its metrics file present) is read, not trained again. ``demo_config``: the demo's config,
    where ``model.init_from=demo`` finds the demo run."""
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.run.run_directory import RunDirectory
    from sasa_det.engine.runner import train

    out = Path(out)
    voc = out / "letters_voc"
    if not (voc / "ImageSets/Main/val.txt").exists():
        make_letters_voc(voc)
    data = _coco_splits(voc, out / "letters_coco")
    rows = []
    for index, start in enumerate(starts, 1):
        run = RunDirectory(out / start)
        started, reused = time.perf_counter(), run.metrics_file.exists()
        if not reused:
            overrides = [f"{key}={value}" for key, value in data.items()]
            overrides += [f"output_dir={run.root}", f"trainer.max_steps={steps}", "eval.save_visualization=8"]
            if STARTS[start]:
                overrides.append(f"model.init_from={STARTS[start]}")
            train(load_config(str(config), [*overrides, *extra_overrides]), demo_config=demo_config)
        metrics = json.loads(run.metrics_file.read_text())
        row = {"start": start, "steps": steps, "seconds": None if reused else round(time.perf_counter() - started)}
        row.update(mAP=_metric(metrics, "AP"), AP50=_metric(metrics, "AP50"))
        rows.append(row)
        took = "(a finished run, read)" if reused else f"in {row['seconds']} s"
        progress(f"[{index}/{len(starts)}] {start}: mAP {row['mAP']:.3f} (AP50 {row['AP50']:.3f}) {took}")
    return rows


def _metric(metrics: dict, name: str) -> float:
    """``val/bbox/<name>`` of a run's final metrics."""
    return float(metrics[f"val/bbox/{name}"])


def finetune_table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| start | steps | val bbox mAP | AP50 | wall s |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [
        f"| {r['start']} | {r['steps']} | {r['mAP']:.3f} | {r['AP50']:.3f} | {r['seconds'] or 'earlier run'} |"
        for r in rows
    ]
    return "\n".join(lines)
