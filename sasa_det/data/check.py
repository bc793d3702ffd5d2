"""Check a dataset without training: the library side of ``tools/check_dataset.py``."""

from __future__ import annotations

import os
from typing import Any

from sasa_det.data.coco import CocoDetectionDataset
from sasa_det.data.validation import DatasetError, DatasetReport, Problem, check_num_classes, default_cache_dir

__all__ = ["check_dataset", "check_config_datasets"]


def check_dataset(
    ann_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    check_images: str = "header",
    with_masks: bool = False,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    name: str = "dataset",
    report_dir: str | os.PathLike | None = None,
    num_classes: int | None = None,
) -> DatasetReport:
    """Run every check the data module runs before training on one annotation file and image folder.

    Args mirror :class:`~sasa_det.data.CocoDataModule`'s (``cache=False`` disables the image-check
    cache); ``num_classes``, when given, must equal the number of categories
    (:func:`~sasa_det.data.validation.check_num_classes`).

    Returns:
        The split's :class:`~sasa_det.data.validation.DatasetReport` (what would be fixed).

    Raises:
        DatasetError: every problem found, with file, record and fix.
    """
    dataset = CocoDetectionDataset(
        image_dir,
        ann_file,
        with_masks=with_masks,
        keep_empty=True,
        check_images=check_images,
        cache_dir=(cache_dir or default_cache_dir()) if cache else None,
        check_workers=workers,
        progress=progress,
        name=name,
        report_dir=report_dir,
    )
    check_num_classes(num_classes, dataset.class_names, ann_file)
    return dataset.report


def check_config_datasets(cfg: Any, check_images: str | None = None, **kwargs: Any) -> list[DatasetReport]:
    """Check the train and validation splits named by an experiment config's ``data`` section.

    ``with_masks``, the image-check level and cache settings and ``model.num_classes`` come from the
    config (``check_images`` overrides ``data.check_images``). Problems of both splits are collected
    before raising.

    Raises:
        DatasetError: the problems of every split, or a config that names no split.
    """
    data = cfg.data
    with_masks = bool(data.with_masks) if data.with_masks is not None else cfg.model.arch == "mask_rcnn"
    splits = [(s, data[f"{s}_ann"], data[f"{s}_images"]) for s in ("train", "val") if data[f"{s}_ann"] is not None]
    if not splits:
        raise DatasetError("The config names no dataset: set data.train_ann/train_images and data.val_ann/val_images.")
    reports, problems = [], []
    for name, ann, images in splits:
        try:
            reports.append(
                check_dataset(
                    ann,
                    images,
                    check_images=check_images or data.check_images,
                    with_masks=with_masks,
                    cache=data.check_cache,
                    cache_dir=data.check_cache_dir,
                    workers=data.check_workers,
                    name=name,
                    num_classes=cfg.model.num_classes,
                    **kwargs,
                )
            )
        except DatasetError as err:
            problems += err.problems or [Problem(str(ann), "", str(err), "see the message")]
        except FileNotFoundError as err:
            problems.append(Problem(str(ann), "", str(err), "check the path in the config"))
    if problems:
        raise DatasetError(f"{len(problems)} problem(s) in the config's datasets:", problems)
    return reports
