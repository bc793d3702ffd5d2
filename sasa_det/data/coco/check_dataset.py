"""Check a dataset without training: the library side of ``tools/check_dataset.py``."""

from __future__ import annotations

import os
from typing import Any

from sasa_det.data.coco.category_checks import check_num_classes
from sasa_det.data.coco.problems import DatasetError, Problem
from sasa_det.data.coco.reader import DatasetChecks, load_checked_coco
from sasa_det.data.coco.report import DatasetReport

__all__ = ["check_dataset", "check_splits"]


def check_dataset(
    ann_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    checks: DatasetChecks | None = None,
    *,
    num_classes: int | None = None,
    **load_options: Any,
) -> DatasetReport:
    """Run every check that loading a split for training runs, on one annotation file and image folder.

    ``checks`` and ``load_options`` (``with_masks``, ``name``, ``report_dir``, ``progress``) as in
    :func:`~sasa_det.data.coco.reader.load_checked_coco`; ``num_classes``, when given, must equal the number of
    categories (:func:`~sasa_det.data.coco.category_checks.check_num_classes`).

    Returns:
        The split's :class:`~sasa_det.data.coco.report.DatasetReport` (what would be fixed).

    Raises:
        DatasetError: every problem found, with file, record and fix.
    """
    records, report = load_checked_coco(ann_file, image_dir, checks, **{"progress": True, **load_options})
    check_num_classes(num_classes, records.class_names, ann_file)
    return report


def check_splits(
    options: Any,
    num_classes: int | None = None,
    progress: bool = True,
    report_dir: str | os.PathLike | None = None,
) -> list[DatasetReport]:
    """Check the train and validation splits that ``options`` name (as the data module would load them);
    ``options`` is a :class:`~sasa_det.data.loading.options.CocoDataOptions` (its checks and the four paths).

    Problems of both splits are collected before raising.

    Raises:
        DatasetError: the problems of every split, or options that name no split.
    """
    splits = [split for split in ("train", "val") if getattr(options, f"{split}_ann") is not None]
    if not splits:
        raise DatasetError("The config names no dataset: set data.train_ann/train_images and data.val_ann/val_images.")
    reports, problems = [], []
    for split in splits:
        ann = getattr(options, f"{split}_ann")
        try:
            reports.append(
                check_dataset(
                    ann,
                    getattr(options, f"{split}_images"),
                    options,
                    with_masks=bool(options.with_masks),
                    progress=progress,
                    name=split,
                    report_dir=report_dir,
                    num_classes=num_classes,
                )
            )
        except DatasetError as err:
            problems += err.problems or [Problem(str(ann), "", str(err), "see the message")]
        except FileNotFoundError as err:
            problems.append(Problem(str(ann), "", str(err), "check the path in the config"))
    if problems:
        raise DatasetError(f"{len(problems)} problem(s) in the config's datasets:", problems)
    return reports
