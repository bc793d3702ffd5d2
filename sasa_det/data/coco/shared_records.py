"""A training split checked and indexed once, then shared: :func:`load_shared_records`.

Reading, checking and packing COCO train takes about as long as ``pycocotools.COCO(path)`` and, while it runs,
several GB of Python objects for the json. Done in every DDP rank, that is the time and memory eight times
over; done in the training process, the freed json leaves its memory fragmented, and loader workers forked
from it copy the pages they allocate into.

:func:`load_shared_records` does it once per split and machine: the first process to ask (any rank; the others
wait on a file lock) runs :func:`~sasa_det.data.coco.reader.load_checked_coco` in a child process, which writes
the packed records, the categories and the report into the check cache (:mod:`~sasa_det.data.coco.cache`).
Every process then reads them memory-mapped: one copy in the page cache, shared by all ranks and all their
loader workers. The split is checked again when the annotation file, a setting that changes the records, or
an image file changed.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

from sasa_det.data.coco.cache import cache_lock, read_records_entry, records_entry_folder, write_records_entry
from sasa_det.data.coco.reader import DatasetChecks, load_checked_coco
from sasa_det.data.coco.report import DatasetReport
from sasa_det.data.coco.split_records import CocoRecords

__all__ = ["load_shared_records"]

logger = logging.getLogger(__name__)


def _build_entry(folder: str, ann_file: str, image_dir: str, checks: DatasetChecks, settings: dict) -> None:
    """Check and pack the split, write the entry to ``folder`` (run in a child process)."""
    records, report = load_checked_coco(ann_file, image_dir, checks, keep_ground_truth=False, **settings)
    with open(ann_file, encoding="utf-8") as f:
        names = [image["file_name"] for image in json.load(f)["images"]] if checks.check_images != "off" else []
    write_records_entry(Path(folder), records, report, Path(image_dir), names)


def load_shared_records(
    ann_file: str | os.PathLike, image_dir: str | os.PathLike, checks: DatasetChecks, **settings: Any
) -> tuple[CocoRecords, DatasetReport]:
    """``load_checked_coco(ann_file, image_dir, checks, keep_ground_truth=False, **settings)``, computed once in
    a child process and cached under ``checks.cache_folder()``; the records come back memory-mapped.

    ``settings``: the other keyword arguments of :func:`~sasa_det.data.coco.reader.load_checked_coco`
    (``with_masks``, ``keep_empty``, ``min_box_size``, ``name``, ``report_dir``, ``progress``). With the cache
    off (``checks.check_cache=False``) this is ``load_checked_coco`` in this process.

    Raises:
        The errors of :func:`~sasa_det.data.coco.reader.load_checked_coco` (from the child, whole).
    """
    cache = checks.cache_folder()
    if cache is None:
        return load_checked_coco(ann_file, image_dir, checks, keep_ground_truth=False, **settings)
    ann_path, image_path = Path(ann_file), Path(image_dir)
    if not ann_path.is_file() or not image_path.is_dir():  # the checks' own error messages name them
        return load_checked_coco(ann_file, image_dir, checks, keep_ground_truth=False, **settings)
    key_settings = {k: settings.get(k) for k in ("with_masks", "keep_empty", "min_box_size", "name")}
    folder = records_entry_folder(cache, ann_path, image_path, checks.check_images, checks.on_bad_records, key_settings)
    # The child gets the plain checks (a subclass such as the data module's options would import its module).
    plain_checks = DatasetChecks(**{f.name: getattr(checks, f.name) for f in fields(DatasetChecks)})
    with cache_lock(folder):
        found = read_records_entry(folder, image_path)
        if found is None:
            logger.info("Checking and indexing %s once (a child process); the result is kept in %s", ann_path, folder)
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                built = pool.submit(_build_entry, str(folder), str(ann_path), str(image_path), plain_checks, settings)
                try:
                    built.result()
                except Exception as error:  # the child's error is whole: its traceback would only repeat it
                    raise error.with_traceback(None) from None
            found = read_records_entry(folder, image_path)
            if found is None:
                raise RuntimeError(
                    f"the checked records of {str(ann_path)!r} were written to {folder} but cannot be read"
                )
            found[1].notes.pop()  # checked just now
    return found
