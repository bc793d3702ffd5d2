"""A split's per-image records packed into a few flat numpy arrays: :class:`PackedRecords`.

Data-loader workers are forked from the main process and share its memory copy-on-write. A list of Python
objects (records, dicts, a pycocotools ``COCO``) does not stay shared: reading an object writes its reference
count, which copies the page it sits on, so every worker slowly grows to a private copy of all annotations
(with 8 workers per GPU on COCO, gigabytes per GPU). Numpy arrays of plain numbers hold no Python objects per
record, so their pages stay shared however often they are read. detectron2 (``DatasetFromList(serialize=True)``)
and mmdetection (``serialize_data``) do the same with one pickled byte buffer.

:class:`PackedRecords` stores the numeric fields of all images column-wise (one array per field, instances of
all images concatenated, with offsets) and the variable parts (file names, segmentations) as one byte buffer
each plus offsets; ``records[i]`` rebuilds the ``i``-th :class:`~sasa_det.data.coco.image_record.ImageRecord`
exactly as it was packed. The arrays can be written to a folder and read back memory-mapped
(:meth:`PackedRecords.save`, :meth:`PackedRecords.load`), so processes that load the same folder share one copy
through the page cache.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from sasa_det.data.coco.image_record import ImageRecord

__all__ = ["PackedRecords"]

# The arrays of a PackedRecords, in the order they are saved.
_FIELDS = (
    "image_ids",
    "heights",
    "widths",
    "name_offsets",
    "name_bytes",
    "instance_offsets",
    "boxes",
    "labels",
    "annotation_ids",
    "segmentation_offsets",
    "segmentation_bytes",
)


def _offsets(lengths: Sequence[int]) -> np.ndarray:
    """``[0, l0, l0 + l1, ...]`` as int64: where each of ``lengths``' items starts in a concatenation."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=offsets[1:])
    return offsets


def _bytes_buffer(chunks: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``chunks`` concatenated into one uint8 array, and their offsets."""
    return np.frombuffer(b"".join(chunks), dtype=np.uint8), _offsets([len(c) for c in chunks])


class PackedRecords(Sequence[ImageRecord]):
    """Read-only sequence of :class:`~sasa_det.data.coco.image_record.ImageRecord` held in flat numpy arrays.

    Build it with :meth:`pack` (from records) or :meth:`load` (from a folder written by :meth:`save`).
    ``len(records)``, ``records[i]`` (a new ``ImageRecord`` equal to the ``i``-th one packed) and iteration
    work as on a list; the whole-split columns ``image_ids``, ``heights``, ``widths`` and ``labels`` are
    arrays that need no decoding (e.g. for aspect-ratio grouping).

    Attributes:
        with_masks: whether the segmentations were packed (otherwise every record's list is empty).
        nbytes: total size of the arrays.
    """

    def __init__(self, arrays: dict[str, np.ndarray], with_masks: bool) -> None:
        missing = [name for name in _FIELDS if name not in arrays]
        if missing:
            raise ValueError(f"PackedRecords: arrays {missing} are missing.")
        for name in _FIELDS:
            setattr(self, name, arrays[name])
        self.with_masks = bool(with_masks)

    @classmethod
    def pack(cls, records: Sequence[ImageRecord], with_masks: bool) -> PackedRecords:
        """Pack ``records`` (the segmentations too when ``with_masks``)."""
        counts = [len(r.labels) for r in records]
        names, name_offsets = _bytes_buffer([r.file_name.encode("utf-8") for r in records])
        if with_masks:
            segmentations = [pickle.dumps(r.segmentations, protocol=pickle.HIGHEST_PROTOCOL) for r in records]
        else:
            segmentations = [b""] * len(records)
        segmentation_bytes, segmentation_offsets = _bytes_buffer(segmentations)

        def column(field: str, dtype: type, width: int | None = None) -> np.ndarray:
            shape = (-1,) if width is None else (-1, width)
            parts = [np.asarray(getattr(r, field), dtype=dtype).reshape(shape) for r in records]
            return np.concatenate(parts) if parts else np.zeros((0,) if width is None else (0, width), dtype)

        arrays = {
            "image_ids": np.array([r.image_id for r in records], dtype=np.int64),
            "heights": np.array([r.height for r in records], dtype=np.int32),
            "widths": np.array([r.width for r in records], dtype=np.int32),
            "name_offsets": name_offsets,
            "name_bytes": names,
            "instance_offsets": _offsets(counts),
            "boxes": column("boxes", np.float32, 4),
            "labels": column("labels", np.int64),
            "annotation_ids": column("annotation_ids", np.int64),
            "segmentation_offsets": segmentation_offsets,
            "segmentation_bytes": segmentation_bytes,
        }
        return cls(arrays, with_masks)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> ImageRecord:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        index = int(index) % len(self)
        first, last = self.instance_offsets[index], self.instance_offsets[index + 1]
        name = self.name_bytes[self.name_offsets[index] : self.name_offsets[index + 1]].tobytes().decode("utf-8")
        segmentations = []
        if self.with_masks:
            chunk = self.segmentation_bytes[self.segmentation_offsets[index] : self.segmentation_offsets[index + 1]]
            segmentations = pickle.loads(chunk.tobytes())
        return ImageRecord(
            image_id=int(self.image_ids[index]),
            file_name=name,
            height=int(self.heights[index]),
            width=int(self.widths[index]),
            boxes=np.array(self.boxes[first:last]),
            labels=np.array(self.labels[first:last]),
            annotation_ids=np.array(self.annotation_ids[first:last]),
            segmentations=segmentations,
        )

    def __iter__(self) -> Iterator[ImageRecord]:
        return (self[i] for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return int(sum(getattr(self, name).nbytes for name in _FIELDS))

    def save(self, folder: str | os.PathLike) -> None:
        """Write the arrays as ``<field>.npy`` files plus ``packed.json`` into ``folder`` (created)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in _FIELDS:
            np.save(folder / f"{name}.npy", getattr(self, name), allow_pickle=False)
        (folder / "packed.json").write_text(json.dumps({"with_masks": self.with_masks, "fields": list(_FIELDS)}))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> PackedRecords:
        """Read a folder written by :meth:`save`, memory-mapped (processes that load it share its pages)."""
        folder = Path(folder)
        meta = json.loads((folder / "packed.json").read_text())
        arrays = {name: _load_array(folder / f"{name}.npy") for name in _FIELDS}
        return cls(arrays, meta["with_masks"])


def _load_array(path: Path) -> np.ndarray:
    """``path`` memory-mapped read-only (an empty array is read as it is: an empty file cannot be mapped)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:
        return np.load(path, allow_pickle=False)
