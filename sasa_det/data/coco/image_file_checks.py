"""The checks of a split's image files: :func:`check_image_files` opens every image (in parallel, with a
progress bar, cached by file size and modification time) and :func:`check_image_sizes` compares what it found
with the json.

A missing, unreadable or truncated file, or one whose size after EXIF orientation is not the json's, is a
:class:`~sasa_det.data.coco.problems.Problem` of its image record; the conversions the loader will make (image
mode, orientation) are counted in the report.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sasa_det.data.coco.cache import cache_lock, image_check_file, read_image_checks, write_image_checks
from sasa_det.data.coco.problems import Problem
from sasa_det.data.coco.report import DatasetReport
from sasa_det.data.image_io import ImageHeader, ImageReadError, conversion_note, read_image_header

__all__ = ["CHECK_LEVELS", "check_image_files", "check_image_sizes"]

#: How the images of a split are checked: not at all, by their headers, or by decoding every pixel.
CHECK_LEVELS = ("off", "header", "full")


def _check_one(path: Path, decode: bool) -> dict[str, Any]:
    """One image's answer as the cache keeps it: its header, or the error message."""
    try:
        return {"header": asdict(read_image_header(path, decode=decode))}
    except ImageReadError as err:
        return {"error": str(err)}


def check_image_files(
    image_dir: str | os.PathLike,
    file_names: Sequence[str],
    level: str = "header",
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> tuple[dict[str, ImageHeader | str], int]:
    """Open every image (in threads), or take the answer from the cache when the file is unchanged.

    Args:
        image_dir: the folder the file names are relative to.
        file_names: images to check.
        level: ``"header"`` (size, mode, orientation, JPEG/PNG end marker) or ``"full"`` (decode
            every pixel: also finds corrupt data inside a file).
        cache_dir: folder of the cache (one json per image folder, keyed by each file's size and
            modification time; a ``full`` answer also serves ``header``); ``None``: no cache.
        workers: threads (default ``min(8, cpus)``).
        progress: show a tqdm progress bar (on a terminal).

    Returns:
        ``(results, cached)``: file name -> :class:`ImageHeader` or the error message, and how many
        answers came from the cache.
    """
    if level not in CHECK_LEVELS[1:]:
        raise ValueError(f"level must be 'header' or 'full', got {level!r}.")
    image_dir = Path(image_dir)
    decode = level == "full"
    cache_file = image_check_file(cache_dir, image_dir) if cache_dir is not None else None
    with cache_lock(cache_file) if cache_file is not None else contextlib.nullcontext():
        cache = read_image_checks(cache_file) if cache_file is not None else {}
        results: dict[str, ImageHeader | str] = {}
        todo: list[tuple[str, list[int]]] = []
        cached = 0
        for name in dict.fromkeys(file_names):
            try:
                stat = (image_dir / name).stat()
            except OSError:
                results[name] = f"{str(image_dir / name)!r} does not exist"
                cache.pop(name, None)
                continue
            stamp = [stat.st_size, stat.st_mtime_ns]
            entry = cache.get(name)
            if entry is not None and entry["stamp"] == stamp and (entry["decoded"] or not decode):
                results[name] = ImageHeader(**entry["header"]) if "header" in entry else entry["error"]
                cached += 1
            else:
                todo.append((name, stamp))
        if todo:
            from tqdm.auto import tqdm

            with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
                answers = pool.map(lambda item: _check_one(image_dir / item[0], decode), todo)
                bar = tqdm(
                    answers,
                    total=len(todo),
                    desc=f"checking images in {image_dir.name}",
                    unit="img",
                    disable=None if progress else True,
                )
                for (name, stamp), answer in zip(todo, bar):
                    cache[name] = {"stamp": stamp, "decoded": decode, **answer}
                    results[name] = ImageHeader(**answer["header"]) if "header" in answer else answer["error"]
            if cache_file is not None:
                write_image_checks(cache_file, cache)
    return results, cached


def check_image_sizes(
    data: dict,
    image_dir: str | os.PathLike,
    ann_file: str | os.PathLike,
    results: dict[str, ImageHeader | str],
    report: DatasetReport | None = None,
) -> list[Problem]:
    """Problems of the image files (missing, unreadable, size after EXIF orientation unlike the json);
    conversions the loader will make (mode, orientation) are counted in ``report``."""
    problems = []
    for index, img in enumerate(data["images"]):
        found = (
            results.get(img.get("file_name"))
            if isinstance(img, dict) and isinstance(img.get("file_name"), str)
            else None
        )
        if found is None:
            continue
        record = f"image id {img['id']}"
        path = str(Path(image_dir) / img["file_name"])
        if isinstance(found, str):
            fix = (
                "check the image folder and the image's file_name"
                if "does not exist" in found
                else "replace the file or remove the image from the annotation file"
            )
            problems.append(Problem(path, record, found.replace(repr(path), "the file"), fix, "images", index))
            continue
        expected = (img.get("height"), img.get("width"))
        if (found.height, found.width) != expected:
            message = f"is {found.height}x{found.width} (HxW) but {ann_file} says {expected[0]}x{expected[1]}"
            if (found.width, found.height) == expected and found.orientation != 1:
                message += f" (it matches the pixels before EXIF orientation {found.orientation}: the annotations were made on the unrotated image)"
                fix = "remove the EXIF orientation tag from the file (e.g. `exiftool -Orientation= FILE`) so that pixels and annotations agree"
            else:
                fix = "set height/width to the file's size, or restore the image the annotations were made on"
            problems.append(Problem(path, record, message, fix, "images", index))
        elif report is not None:
            for note in conversion_note(found.mode, found.orientation):
                report.fix(f"image {note}", img["id"])
    return problems
