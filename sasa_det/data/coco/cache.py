"""The check cache: what checking a split found, kept in one folder so that it is not done again while the files
are unchanged.

The folder is ``data.check_cache_dir``, or :func:`default_cache_dir`. It holds two caches:

- **the image checks**, one json per image folder (:func:`image_check_file`): each image file's answer (its
  header, or the error) keyed by the file's size and modification time (:func:`read_image_checks`,
  :func:`write_image_checks`); a ``full`` answer also serves ``header``.
- **the checked, packed records of a training split**, one folder each under ``records/``
  (:func:`records_entry_folder`): the packed records (:class:`~sasa_det.data.coco.packed_records.PackedRecords`),
  the categories and the report (:func:`write_records_entry`). An entry is keyed by the annotation file (path,
  size, modification time) and the settings that change the records; it is read
  (:func:`read_records_entry`, memory-mapped) only while every image file has the size and modification time
  it had when it was checked.

Processes (DDP ranks) that check the same image folder or split take turns under :func:`cache_lock`: the first
checks, the others then read its answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sasa_det.data.coco.packed_records import PackedRecords
from sasa_det.data.coco.report import DatasetReport
from sasa_det.data.coco.split_records import CocoRecords

__all__ = [
    "cache_lock",
    "default_cache_dir",
    "image_check_file",
    "read_image_checks",
    "read_records_entry",
    "records_entry_folder",
    "write_image_checks",
    "write_records_entry",
]

# Bump when what an image-check file holds changes.
_IMAGE_CHECKS_VERSION = 1
# Bump when what a records entry holds changes.
_ENTRY_VERSION = 1


def default_cache_dir() -> Path:
    """Where check results are cached: ``$SASA_DET_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME/sasa_det`` or ``~/.cache/sasa_det``."""
    if os.environ.get("SASA_DET_CACHE_DIR"):
        return Path(os.environ["SASA_DET_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sasa_det"


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on ``path`` + ``.lock`` so that processes (DDP ranks) checking the same folder
    take turns: the first checks, the others then read its cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): concurrent checks just repeat the work
        yield
        return
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------- image checks
def image_check_file(cache_dir: str | os.PathLike, image_dir: Path) -> Path:
    """The cache file of the image checks of ``image_dir`` (named by a digest of its absolute path)."""
    key = hashlib.sha1(str(image_dir.resolve()).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"image_check_{key}.json"


def read_image_checks(path: Path) -> dict[str, Any]:
    """File name -> cached answer (``stamp``, ``decoded``, and ``header`` or ``error``); empty when the file is
    missing, unreadable or of another version."""
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cached.get("files", {}) if cached.get("version") == _IMAGE_CHECKS_VERSION else {}


def write_image_checks(path: Path, files: dict[str, Any]) -> None:
    """Replace the cache file ``path`` with ``files`` (written aside, then renamed: readers never see half)."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"version": _IMAGE_CHECKS_VERSION, "files": files}), encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- records
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


def records_entry_folder(
    cache_dir: Path, ann_file: Path, image_dir: Path, check_images: str, on_bad_records: str, settings: dict[str, Any]
) -> Path:
    """The folder of the records entry of a split: keyed by the annotation file (path, size, modification time),
    the image folder, how it is checked and the ``settings`` that change the records."""
    stat = ann_file.stat()
    described = [
        _ENTRY_VERSION,
        str(ann_file.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
        str(image_dir.resolve()),
        check_images,
        on_bad_records,
        settings,
    ]
    return cache_dir / "records" / hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:20]


def write_records_entry(
    folder: Path, records: CocoRecords, report: DatasetReport, image_dir: Path, image_names: list[str]
) -> None:
    """Write the checked split to ``folder`` (written aside, then renamed), valid while the images
    ``image_names`` keep their size and modification time."""
    tmp = Path(f"{folder}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    records.images.save(tmp / "records")
    fields = {k: v for k, v in asdict(records).items() if k not in ("images", "ground_truth")}
    meta = {"records": fields, "report": report.to_dict(), "image_names": image_names}
    meta["image_stamps"] = _image_stamps(image_dir, image_names)
    (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def read_records_entry(folder: Path, image_dir: Path) -> tuple[CocoRecords, DatasetReport] | None:
    """The entry's records (memory-mapped) and report, or ``None`` when there is none or an image changed
    since."""
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
