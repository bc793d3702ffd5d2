"""Check a COCO-format dataset completely before training, and report what was fixed or dropped.

:func:`check_coco_dict` reads the annotation json's structure, types, ids and references, boxes and
(with masks) polygons and RLE; :func:`check_image_files` opens every image (in parallel, with a
progress bar, cached by file size and modification time) and :func:`check_image_sizes` compares what
it found with the json. Each finding is a :class:`Problem` that names the file, the record and the fix;
all of them are collected before anything is raised, so one run lists every problem.

What cannot be fixed safely raises :class:`DatasetError` (a ``ValueError``) listing them all, or, with
``on_bad_records="drop"``, :func:`drop_bad_records` removes exactly the records named (an image
takes its annotations with it) and the :class:`DatasetReport` lists them. What can be fixed safely
(boxes clipped to the image, crowd regions ignored, a missing ``area`` filled in, image modes
converted, EXIF orientation applied, ...) is fixed by the dataset and counted in the report, which the
data module prints and writes to the run directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sasa_det.data.image_io import ImageHeader, ImageReadError, conversion_note, read_image_header

__all__ = [
    "CHECK_LEVELS",
    "BAD_RECORD_POLICIES",
    "DatasetError",
    "DatasetReport",
    "Problem",
    "check_coco_dict",
    "check_image_files",
    "check_image_sizes",
    "check_num_classes",
    "default_cache_dir",
    "drop_bad_records",
    "raise_if_problems",
    "removed_polygon_parts",
]

CHECK_LEVELS = ("off", "header", "full")
BAD_RECORD_POLICIES = ("error", "drop")
# Problems quoted in an exception message; the full list goes to a file.
_MAX_LISTED = 20
# Record ids quoted per line of a report.
_MAX_IDS = 5
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Attributes:
        file: the annotation file or the image file concerned.
        record: which record (``"annotation id 10 (image id 3)"``, ``"image id 3"``, ``""`` for the file).
        message: what is wrong.
        fix: what the user should do.
        section: ``"images"`` / ``"annotations"`` when dropping the record at ``index`` of that list
            removes the problem; ``None`` when nothing can be dropped (e.g. a duplicate category id).
        index: position of the record in its section.
    """

    file: str
    record: str
    message: str
    fix: str
    section: str | None = None
    index: int = -1

    def __str__(self) -> str:
        where = f"{self.file}: {self.record}" if self.record else self.file
        return f"{where}: {self.message}; fix: {self.fix}"


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message lists every problem with file, record and fix.

    Attributes:
        problems: all problems found (the message quotes the first ``20``).
        full_list: file holding every problem, one a line (written when the list was cut).
    """

    def __init__(self, headline: str, problems: Sequence[Problem] = (), full_list: Path | None = None) -> None:
        self.headline = headline
        self.problems = list(problems)
        self.full_list = full_list
        lines = [headline]
        lines += [f"  - {p}" for p in self.problems[:_MAX_LISTED]]
        if len(self.problems) > _MAX_LISTED:
            rest = len(self.problems) - _MAX_LISTED
            lines.append(f"  ... and {rest} more" + (f"; the full list is in {full_list}" if full_list else ""))
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its problems (an error raised in a child process reaches the parent whole)."""
        return (type(self), (self.headline, self.problems, self.full_list))


def raise_if_problems(
    problems: Sequence[Problem], what: str, report_dir: str | os.PathLike | None, hint: str = ""
) -> None:
    """Raise :class:`DatasetError` listing ``problems`` (if any); a list longer than the message can
    quote is written in full to ``report_dir`` (or the temporary folder) and the message names the file."""
    if not problems:
        return
    full_list = None
    if len(problems) > _MAX_LISTED:
        folder = Path(report_dir) if report_dir is not None else Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        full_list = folder / f"dataset_problems_{Path(what).stem}.txt"
        full_list.write_text("\n".join(str(p) for p in problems) + "\n", encoding="utf-8")
    headline = f"{what}: {len(problems)} problem(s) found before training{hint}:"
    raise DatasetError(headline, problems, full_list)


@dataclass
class DatasetReport:
    """What the library fixed, dropped or noticed in one split, for the user.

    Attributes:
        name: split name (``train`` / ``val``) or a label.
        ann_file, image_dir: the split's files.
        counts: totals (``images``, ``annotations``, ``images_kept``, ``instances_kept``, ...).
        fixes: description of a fix -> ids of the records it was applied to.
        dropped: problems whose records were removed (``on_bad_records="drop"``, or skipped while training).
        notes: other facts worth knowing (e.g. categories that no annotation uses).
    """

    name: str
    ann_file: str
    image_dir: str
    counts: dict[str, int] = field(default_factory=dict)
    fixes: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    dropped: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fix(self, what: str, record_id: Any) -> None:
        """Record that fix ``what`` was applied to the record ``record_id``."""
        self.fixes[what].append(record_id)

    def count(self, what: str) -> int:
        """How many records fix ``what`` was applied to."""
        return len(self.fixes.get(what, ()))

    def format(self) -> str:
        """Multi-line summary: totals, then each fix and drop with its count and first record ids."""
        c = self.counts
        lines = [
            f"Dataset {self.name} ({self.ann_file}, images in {self.image_dir}): "
            f"{c.get('images_kept', 0)}/{c.get('images', 0)} images, "
            f"{c.get('instances_kept', 0)} training instances from {c.get('annotations', 0)} annotations."
        ]
        for what, ids in self.fixes.items():
            shown = ", ".join(str(i) for i in ids[:_MAX_IDS]) + (", ..." if len(ids) > _MAX_IDS else "")
            lines.append(f"  fixed: {len(ids)} x {what} ({shown})")
        if self.dropped:
            lines.append(f"  dropped {len(self.dropped)} bad record(s) (on_bad_records=drop):")
            lines += [f"    - {p}" for p in self.dropped[:_MAX_IDS]]
            if len(self.dropped) > _MAX_IDS:
                lines.append(f"    ... and {len(self.dropped) - _MAX_IDS} more (see the report file)")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetReport:
        """The report :meth:`to_dict` describes."""
        report = cls(data["name"], data["ann_file"], data["image_dir"], dict(data["counts"]))
        report.fixes.update({what: list(ids) for what, ids in data["fixes"].items()})
        report.dropped = [Problem(**problem) for problem in data["dropped"]]
        report.notes = list(data["notes"])
        return report

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (every record id, every dropped problem)."""
        return {
            "name": self.name,
            "ann_file": self.ann_file,
            "image_dir": self.image_dir,
            "counts": dict(self.counts),
            "fixes": {k: list(v) for k, v in self.fixes.items()},
            "dropped": [asdict(p) for p in self.dropped],
            "notes": list(self.notes),
        }

    def write(self, directory: str | os.PathLike) -> Path:
        """Write ``data_report_<name>.json`` (everything) and ``.txt`` (the summary) into ``directory``;
        returns the json path."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"data_report_{self.name}.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str), encoding="utf-8")
        path.with_suffix(".txt").write_text(self.format() + "\n", encoding="utf-8")
        return path


# ---------------------------------------------------------------------------------------------- json
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_NUMBER_TYPES = {int, float}


def _all_finite_numbers(values: Any) -> bool:
    """Whether every item of a list is a finite int or float (not a bool); the common case is checked in C
    (the items' types, then one sum), only a list that fails it is checked item by item."""
    if set(map(type, values)) <= _NUMBER_TYPES and math.isfinite(sum(values)):
        return True
    return all(_is_number(v) for v in values)


def _all_natural_numbers(values: list) -> bool:
    """Whether every item is an int >= 0 (not a bool), checked in C for the common case."""
    if set(map(type, values)) <= {int}:
        return not values or min(values) >= 0
    return all(_is_int(v) and v >= 0 for v in values)


def _rle_string_counts(text: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, with bounds checks)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            if p >= len(text):
                raise ValueError("the string ends inside a number")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {text[p]!r} is not an RLE digit")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _segmentation_problem(segm: Any, height: Any, width: Any) -> tuple[str | None, int]:
    """``(what is wrong or None, number of polygon parts that will be removed)`` for one segmentation."""
    if isinstance(segm, list):
        if not segm:
            return "an empty polygon list", 0
        valid = 0
        for part in segm:
            if not isinstance(part, (list, tuple)) or not _all_finite_numbers(part):
                return "a polygon part that is not a list of finite numbers", 0
            valid += len(part) >= 6 and len(part) % 2 == 0
        if valid == 0:
            return "no polygon part with at least 3 points (x, y pairs)", 0
        return None, len(segm) - valid
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = segm["size"]
        if list(size) != [height, width]:
            return f"an RLE of size {size}, not the image's [height, width] = [{height}, {width}]", 0
        counts = segm["counts"]
        try:
            runs = _rle_string_counts(counts) if isinstance(counts, str) else list(counts)
        except ValueError as err:
            return f"a compressed RLE string that cannot be decoded ({err})", 0
        if not _all_natural_numbers(runs) or sum(runs) != height * width:
            return f"RLE run lengths that do not cover the {height}x{width} image exactly", 0
        return None, 0
    return (
        f"a segmentation that is neither a polygon list nor an RLE dict with 'counts' and 'size' ({type(segm).__name__})",
        0,
    )


def check_coco_dict(data: Any, ann_file: str | os.PathLike, with_masks: bool = False) -> list[Problem]:
    """Every problem in a loaded COCO instances dict, each with file, record and fix.

    Checks the top-level structure; images (``id`` int, unique; ``file_name`` a non-empty string,
    unique; ``height``/``width`` positive ints); categories (``id`` int, unique; at least one);
    annotations (``id`` int, unique; ``image_id`` / ``category_id`` that exist; ``bbox`` four finite
    numbers with positive width and height that overlap the image; ``iscrowd`` 0 or 1; ``area`` a
    number when given); with ``with_masks``, a ``segmentation`` that can make a mask (a polygon with a
    part of >= 3 points, or an RLE of the image's size whose runs cover it exactly).
    """
    file = str(ann_file)
    if not isinstance(data, dict):
        return [
            Problem(
                file,
                "",
                "the file does not hold a JSON object",
                "write {'images': [...], 'annotations': [...], 'categories': [...]}",
            )
        ]
    problems = [
        Problem(
            file,
            "",
            f"missing or non-list key {key!r}",
            "a COCO instances file needs 'images', 'annotations' and 'categories' lists",
        )
        for key in ("images", "annotations", "categories")
        if not isinstance(data.get(key), list)
    ]
    if problems:
        return problems

    category_ids: set[int] = set()
    for index, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            problems.append(
                Problem(
                    file, f"categories[{index}]", f"has no integer 'id': {cat!r}", "give every category an integer id"
                )
            )
        elif cat["id"] in category_ids:
            problems.append(
                Problem(
                    file, f"category id {cat['id']}", "appears twice in 'categories'", "category ids must be unique"
                )
            )
        else:
            category_ids.add(cat["id"])
    if not data["categories"]:
        problems.append(Problem(file, "", "'categories' is empty", "list at least one category"))
    if not data["annotations"]:
        problems.append(
            Problem(
                file,
                "",
                "'annotations' is empty: nothing to train on or evaluate",
                "check that the right file was given (converters write one)",
            )
        )

    def image_problem(index: int, record: str, message: str, fix: str) -> Problem:
        return Problem(file, record, message, fix, "images", index)

    def annotation_problem(index: int, record: str, message: str, fix: str) -> Problem:
        return Problem(file, record, message, fix, "annotations", index)

    images: dict[int, dict] = {}
    id_positions: dict[int, list[int]] = defaultdict(list)
    file_positions: dict[str, list[int]] = defaultdict(list)
    for index, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            problems.append(
                image_problem(
                    index, f"images[{index}]", f"has no integer 'id': {str(img)[:80]}", "give every image an integer id"
                )
            )
            continue
        record = f"image id {img['id']}"
        id_positions[img["id"]].append(index)
        bad = False
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            problems.append(
                image_problem(
                    index,
                    record,
                    f"has no 'file_name' string ({img.get('file_name')!r})",
                    "set file_name to the image's path relative to the image folder",
                )
            )
            bad = True
        else:
            file_positions[img["file_name"]].append(index)
        for key in ("height", "width"):
            if not _is_int(img.get(key)) or img[key] <= 0:
                problems.append(
                    image_problem(
                        index,
                        record,
                        f"has {key}={img.get(key)!r}; every image needs 'id', 'file_name', 'height' and 'width' (positive ints)",
                        f"set {key} to the image's size in pixels",
                    )
                )
                bad = True
        if not bad:
            images[img["id"]] = img
    for image_id, positions in id_positions.items():
        if len(positions) > 1:
            images.pop(image_id, None)
            problems += [
                image_problem(
                    i,
                    f"image id {image_id}",
                    f"appears twice in 'images' (positions {positions}); image ids must be unique",
                    "give each image its own id",
                )
                for i in positions
            ]
    for name, positions in file_positions.items():
        for i in positions[1:]:
            problems.append(
                image_problem(
                    i,
                    f"image id {data['images'][i]['id']}",
                    f"uses file_name {name!r} like image id {data['images'][positions[0]]['id']}",
                    "remove the duplicate image entry",
                )
            )

    ann_positions: dict[int, list[int]] = defaultdict(list)
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            problems.append(
                annotation_problem(
                    index,
                    f"annotations[{index}]",
                    f"has no integer 'id': {str(ann)[:80]}",
                    "give every annotation an integer id",
                )
            )
            continue
        ann_positions[ann["id"]].append(index)
        problems += _annotation_problems(ann, index, images, id_positions, category_ids, file, with_masks)
    for ann_id, positions in ann_positions.items():
        if len(positions) > 1:
            problems += [
                annotation_problem(
                    i,
                    f"annotation id {ann_id}",
                    f"appears twice (positions {positions}); annotation ids must be unique",
                    "renumber the annotations",
                )
                for i in positions
            ]
    return problems


def _annotation_problems(
    ann: dict,
    index: int,
    images: dict[int, dict],
    image_positions: dict,
    category_ids: set[int],
    file: str,
    with_masks: bool,
) -> list[Problem]:
    def problem(message: str, fix: str) -> Problem:
        record = f"annotation id {ann['id']} (image id {ann.get('image_id')})"
        return Problem(file, record, message, fix, "annotations", index)

    out = []
    if ann.get("image_id") not in image_positions:
        out.append(problem("points to an image id that is not in 'images'", "add the image or remove the annotation"))
    if ann.get("category_id") not in category_ids:
        out.append(
            problem(
                f"has category_id {ann.get('category_id')!r}, which is not in 'categories' (known ids: {sorted(category_ids)[:20]})",
                "add the category or fix the annotation",
            )
        )
    if ann.get("iscrowd", 0) not in (0, 1):
        out.append(problem(f"has iscrowd={ann.get('iscrowd')!r}", "iscrowd must be 0 or 1"))
    if "area" in ann and not _is_number(ann["area"]):
        out.append(
            problem(f"has area={ann['area']!r}", "set area to a number (or remove it to have it computed from the box)")
        )
    bbox = ann.get("bbox")
    img = images.get(ann.get("image_id"))
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not _all_finite_numbers(bbox):
        out.append(
            problem(f"has a malformed bbox {bbox!r}", "write [x, y, width, height] with four finite numbers in pixels")
        )
    elif bbox[2] <= 0 or bbox[3] <= 0:
        out.append(
            problem(
                f"has a bbox {bbox!r} with non-positive size",
                "[x, y, width, height] needs width > 0 and height > 0 (an [x1, y1, x2, y2] box converted wrongly?)",
            )
        )
    elif img is not None and (
        bbox[0] >= img["width"] or bbox[1] >= img["height"] or bbox[0] + bbox[2] <= 0 or bbox[1] + bbox[3] <= 0
    ):
        out.append(
            problem(
                f"has a bbox {bbox!r} entirely outside its {img['width']}x{img['height']} (WxH) image",
                "check the coordinates (normalised instead of pixels?) and the image's width/height",
            )
        )
    if with_masks and img is not None:
        if "segmentation" not in ann:
            out.append(problem("has no 'segmentation'", "add masks or build the dataset with with_masks=False"))
        else:
            reason, _ = _segmentation_problem(ann["segmentation"], img["height"], img["width"])
            if reason:
                out.append(
                    problem(f"has a segmentation that cannot make a mask: {reason}", "fix or remove the segmentation")
                )
    return out


def removed_polygon_parts(segm: Any) -> int:
    """Number of polygon parts with fewer than 3 points in a (valid) segmentation; they are removed."""
    if not isinstance(segm, list):
        return 0
    if len(segm) == 1 and len(segm[0]) >= 6 and len(segm[0]) % 2 == 0:  # most COCO objects: one valid part
        return 0
    return sum(1 for part in segm if not (len(part) >= 6 and len(part) % 2 == 0))


def drop_bad_records(data: dict, problems: Iterable[Problem]) -> dict:
    """A copy of ``data`` without the records the problems name (an image's annotations go with it).

    Raises:
        DatasetError: a problem names no droppable record (e.g. a duplicate category id).
    """
    problems = list(problems)
    fatal = [p for p in problems if p.section is None]
    if fatal:
        raise DatasetError("These problems cannot be fixed by dropping records:", fatal)
    bad = {(p.section, p.index) for p in problems}
    images = [img for i, img in enumerate(data["images"]) if ("images", i) not in bad]
    kept_ids = {img["id"] for img in images}
    annotations = [
        ann
        for i, ann in enumerate(data["annotations"])
        if ("annotations", i) not in bad and ann.get("image_id") in kept_ids
    ]
    return {**data, "images": images, "annotations": annotations}


# ---------------------------------------------------------------------------------------------- images
def default_cache_dir() -> Path:
    """Where image-check results are cached: ``$SASA_DET_CACHE_DIR`` when set, else
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


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cached.get("files", {}) if cached.get("version") == _CACHE_VERSION else {}


def _write_cache(path: Path, files: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"version": _CACHE_VERSION, "files": files}), encoding="utf-8")
    os.replace(tmp, path)


def _check_one(path: Path, decode: bool) -> dict[str, Any]:
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
    if level not in ("header", "full"):
        raise ValueError(f"level must be 'header' or 'full', got {level!r}.")
    image_dir = Path(image_dir)
    decode = level == "full"
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha1(str(image_dir.resolve()).encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"image_check_{key}.json"
    with cache_lock(cache_file) if cache_file is not None else contextlib.nullcontext():
        cache = _read_cache(cache_file) if cache_file is not None else {}
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
                _write_cache(cache_file, cache)
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


def check_num_classes(
    num_classes: int | None, class_names: Sequence[str], ann_file: str | os.PathLike, key: str = "model.num_classes"
) -> None:
    """Check a configured number of classes against the dataset's categories (in either direction).

    Args:
        num_classes: the configured value (``None`` = taken from the data; always fine).
        class_names: the dataset's category names (``CocoDataModule.class_names``).
        ann_file: the annotation file they came from (named in the message).
        key: the config key to name in the fix.

    Raises:
        DatasetError: ``num_classes`` differs from ``len(class_names)``: fewer classes would make
            labels the model cannot output; more would train classes that never occur.
    """
    found = len(class_names)
    if num_classes is None or int(num_classes) == found:
        return
    listed = ", ".join(map(str, class_names[:20])) + (", ..." if found > 20 else "")
    if num_classes < found:
        message = f"{key}={num_classes} but the dataset has {found} categories ({listed}): labels above {num_classes} would not fit the model"
    else:
        message = f"{key}={num_classes} but the dataset has only {found} categories ({listed}): {num_classes - found} output(s) would be trained on no data"
    raise DatasetError(
        f"{ann_file}: number of classes disagrees with the dataset:",
        [Problem(str(ann_file), "", message, f"set {key}={found} or null (taken from the data)")],
    )
