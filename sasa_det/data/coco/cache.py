"""A training split checked and indexed once, then shared: :func:`load_shared_records`.

Reading, checking and packing COCO train takes about as long as ``pycocotools.COCO(path)`` and, while it runs,
several GB of Python objects for the json. Done in every DDP rank, that is the time and memory eight times
over; done in the training process, the freed json leaves its memory fragmented, and loader workers forked
from it copy the pages they allocate into.

:func:`load_shared_records` does it once per split and machine: the first process to ask (any rank; the others
wait on a file lock) runs :func:`~sasa_det.data.coco.reader.load_checked_coco` in a child process, which writes
the packed records (:class:`~sasa_det.data.coco.packed_records.PackedRecords`), the categories and the report into
the check cache folder. Every process then reads them memory-mapped: one copy in the page cache, shared by
all ranks and all their loader workers. The entry is keyed by the annotation file (path, size, modification
time) and the settings that change the records; it is used only while every image file has the size and
modification time it had when it was checked (otherwise the split is checked again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from sasa_det.data.coco.json_checks import DatasetReport, cache_lock
from sasa_det.data.coco.packed_records import PackedRecords
from sasa_det.data.coco.reader import CocoRecords, DatasetChecks, load_checked_coco

__all__ = ["load_shared_records"]

logger = logging.getLogger(__name__)

# Bump when what an entry holds changes.
_ENTRY_VERSION = 1


def _image_stamps(image_dir: Path, names: list[str]) -> str:
    """Digest of every image's size and modification time (missing files count too)."""
    digest = hashlib.sha1()
    for name in names:
        try:
            stat = (image_dir / name).stat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}\0missing\n".encode())
    return digest.hexdigest()


def _entry_key(ann_file: Path, image_dir: Path, checks: DatasetChecks, settings: dict[str, Any]) -> str:
    stat = ann_file.stat()
    described = [
        _ENTRY_VERSION,
        str(ann_file.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
        str(image_dir.resolve()),
        checks.check_images,
        checks.on_bad_records,
        settings,
    ]
    return hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:20]


def _build_entry(folder: str, ann_file: str, image_dir: str, checks: DatasetChecks, settings: dict) -> None:
    """Check and pack the split, write the entry to ``folder`` (run in a child process)."""
    records, report = load_checked_coco(ann_file, image_dir, checks, keep_ground_truth=False, **settings)
    with open(ann_file, encoding="utf-8") as f:
        names = [image["file_name"] for image in json.load(f)["images"]] if checks.check_images != "off" else []
    tmp = Path(f"{folder}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    records.images.save(tmp / "records")
    fields = {k: v for k, v in asdict(records).items() if k not in ("images", "ground_truth")}
    meta = {"records": fields, "report": report.to_dict(), "image_names": names}
    meta["image_stamps"] = _image_stamps(Path(image_dir), names)
    (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _read_entry(folder: Path, image_dir: Path) -> tuple[CocoRecords, DatasetReport] | None:
    """The entry's records and report, or ``None`` when there is none or an image changed since."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if _image_stamps(image_dir, meta["image_names"]) != meta["image_stamps"]:
        return None
    records = CocoRecords(images=PackedRecords.load(folder / "records"), ground_truth=None, **meta["records"])
    report = DatasetReport.from_dict(meta["report"])
    report.notes.append(f"checked and indexed before; read from {folder}")
    return records, report


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
    folder = cache / "records" / _entry_key(ann_path, image_path, checks, key_settings)
    # The child gets the plain checks (a subclass such as the data module's options would import its module).
    plain_checks = DatasetChecks(**{f.name: getattr(checks, f.name) for f in fields(DatasetChecks)})
    with cache_lock(folder):
        found = _read_entry(folder, image_path)
        if found is None:
            logger.info("Checking and indexing %s once (a child process); the result is kept in %s", ann_path, folder)
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                pool.submit(_build_entry, str(folder), str(ann_path), str(image_path), plain_checks, settings).result()
            found = _read_entry(folder, image_path)
            if found is None:
                raise RuntimeError(
                    f"the checked records of {str(ann_path)!r} were written to {folder} but cannot be read"
                )
            found[1].notes.pop()  # checked just now
    return found
