"""A split as records: :class:`CocoRecords`, what :func:`~sasa_det.data.coco.reader.load_checked_coco` returns,
the dataset serves and the check cache keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from sasa_det.data.coco.packed_records import PackedRecords

__all__ = ["CocoRecords"]


@dataclass
class CocoRecords:
    """A split as records: what a dataset serves, and the ground truth that evaluation compares with.

    Attributes:
        images: one :class:`~sasa_det.data.coco.image_record.ImageRecord` per image kept, in the json's order, packed into flat arrays
            (:class:`~sasa_det.data.coco.packed_records.PackedRecords`: data-loader workers share them).
        category_ids: COCO category id of each label (index ``label - 1``), ascending.
        class_names: category names, index ``label - 1``.
        ground_truth: the COCO json after dropped records were removed and missing areas filled in; ``None``
            when it was not kept (a training split: only evaluation needs it).
        ann_file, image_dir: where the split comes from (named in messages).
        with_masks: whether the segmentations were checked and kept.
    """

    images: PackedRecords
    category_ids: list[int]
    class_names: list[str]
    ground_truth: Optional[dict[str, Any]]
    ann_file: str
    image_dir: str
    with_masks: bool = False
