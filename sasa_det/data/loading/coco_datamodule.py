"""LightningDataModule over COCO-format train/val sets."""

from __future__ import annotations

import os
from functools import partial

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader

from sasa_det.data.coco.reader import load_checked_coco
from sasa_det.data.coco.report import DatasetReport
from sasa_det.data.coco.shared_records import load_shared_records
from sasa_det.data.loading.collate import collate_detection
from sasa_det.data.loading.dataset import CocoDetectionDataset
from sasa_det.data.loading.options import CocoDataOptions
from sasa_det.data.loading.sampling import orientation_groups, resumable_train_loader, sharded_val_loader
from sasa_det.data.loading.transforms import build_train_transforms, build_val_transforms

__all__ = ["CocoDataModule", "CocoDataOptions"]


@rank_zero_only
def _print_report(report: DatasetReport, report_dir: str | os.PathLike | None) -> None:
    """Print a split's report and write it to ``report_dir`` (global rank 0 only)."""
    where = f"\n  (written to {report.write(report_dir)})" if report_dir is not None else ""
    print(report.format() + where, flush=True)


class CocoDataModule(pl.LightningDataModule):
    """Train and validation loaders for :class:`CocoDetectionDataset`.

    Batches are ``(images, targets)`` lists (see :func:`collate_detection`). The training loader is a
    :func:`~sasa_det.data.loading.sampling.resumable_train_loader`: the epoch's order and every image's augmentation
    follow from ``seed`` alone, each rank takes its shard, and a run resumed mid-epoch continues with the
    very batches the uninterrupted run would have seen; with ``aspect_ratio_grouping`` every training batch
    holds images of one orientation (:class:`~sasa_det.data.loading.sampling.AspectRatioGroupedSampler`). The validation loader shards the set across ranks
    without padding (every image evaluated once). Validation images keep their original size. The trainer
    is built with ``use_distributed_sampler=False`` (these loaders shard themselves).

    Either split may be omitted (``None`` paths): e.g. evaluation needs only the validation set. The
    datasets are built lazily on first use (``setup`` or the properties below), so ``num_classes`` is
    available before the trainer starts; when both splits exist their categories must agree.

    Args:
        options: the splits' files, loader and augmentation settings, with masks or not, and how every record
            is checked (:class:`CocoDataOptions`): with ``on_bad_records="error"`` any problem found stops
            before training with the full list (file, record, fix); with ``"drop"`` the bad records are
            removed and listed in the report, and a training image that fails later (changed on disk) is
            skipped with a warning naming it. Validation images never are: a failing one stops the run with
            its file and record.
        seed: seed of the training order and augmentations.
        report_dir: where each split's ``data_report_<split>.{txt,json}`` is written (and the full list
            of problems when it is too long for the error message); ``None``: not written.
        progress: progress bar while checking images (on a terminal).
        pin_memory: pin batches for faster host-to-GPU copies (ignored without CUDA).

    Building a split prints its :class:`~sasa_det.data.coco.report.DatasetReport` (what was fixed,
    dropped or noticed, with counts and the first record ids) on global rank 0.
    """

    def __init__(
        self,
        options: CocoDataOptions,
        seed: int = 0,
        report_dir: str | os.PathLike | None = None,
        progress: bool = True,
        pin_memory: bool = True,
    ) -> None:
        super().__init__()
        if (options.train_images is None) != (options.train_ann is None):
            raise ValueError("train_images and train_ann must be given together (or both None).")
        if (options.val_images is None) != (options.val_ann is None):
            raise ValueError("val_images and val_ann must be given together (or both None).")
        if options.train_ann is None and options.val_ann is None:
            raise ValueError(
                "CocoDataModule needs at least one split: give train_images/train_ann or val_images/val_ann."
            )
        if options.batch_size < 1 or options.val_batch_size < 1:
            raise ValueError(
                f"batch sizes must be >= 1, got batch_size={options.batch_size}, val_batch_size={options.val_batch_size}."
            )
        if options.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {options.num_workers}.")
        self.options = options
        self.batch_size = options.batch_size
        self.seed = int(seed)
        self.report_dir = report_dir
        self.progress = progress
        self.pin_memory = pin_memory
        # Built now so that bad augmentation settings fail before any file is read.
        self.train_transforms = build_train_transforms(options.min_sizes, options.max_size, options.flip_prob)
        self.val_transforms = build_val_transforms()
        self.reports: dict[str, DatasetReport] = {}
        self._datasets: dict[str, CocoDetectionDataset] = {}

    # ------------------------------------------------------------------ datasets
    @property
    def train_dataset(self) -> CocoDetectionDataset:
        """Training split (built on first access)."""
        return self._split("train", "training")

    @property
    def val_dataset(self) -> CocoDetectionDataset:
        """Validation split, every image kept at its original size (built on first access)."""
        return self._split("val", "validation")

    def _split(self, split: str, name: str) -> CocoDetectionDataset:
        if getattr(self.options, f"{split}_ann") is None:
            raise ValueError(f"This CocoDataModule has no {name} split ({split}_images/{split}_ann are None).")
        if self._datasets.get(split) is None:
            self._datasets[split] = self._build(split)
            self._check_categories()
        return self._datasets[split]

    def _build(self, split: str) -> CocoDetectionDataset:
        """Load and check one split, print its report (rank 0) and write it to ``report_dir``."""
        options = self.options
        train = split == "train"
        # Training records are checked and packed once per machine and shared by every rank and worker
        # (load_shared_records); validation keeps its ground truth in this process, for the evaluator.
        load = load_shared_records if train else partial(load_checked_coco, keep_ground_truth=True)
        records, report = load(
            getattr(options, f"{split}_ann"),
            getattr(options, f"{split}_images"),
            options,
            with_masks=bool(options.with_masks),
            keep_empty=options.keep_empty_train if train else True,
            name=split,
            report_dir=self.report_dir,
            progress=self.progress and rank_zero_only.rank == 0,
        )
        self.reports[split] = report
        _print_report(report, self.report_dir)
        # Evaluation must see every validation image; only training images may be skipped.
        skip = train and options.on_bad_records == "drop"
        transforms = self.train_transforms if train else self.val_transforms
        return CocoDetectionDataset(records, transforms, on_load_error="skip" if skip else "error")

    def _reference_dataset(self) -> CocoDetectionDataset:
        return self.val_dataset if self.options.val_ann is not None else self.train_dataset

    def _check_categories(self) -> None:
        if len(self._datasets) < 2:
            return
        train, val = self._datasets["train"].records, self._datasets["val"].records
        train_cats = dict(zip(train.category_ids, train.class_names))
        val_cats = dict(zip(val.category_ids, val.class_names))
        if train_cats != val_cats:
            raise ValueError(
                f"Train ({train.ann_file}) and validation ({val.ann_file}) annotation files define different "
                f"categories: {sorted(train_cats.items())} vs {sorted(val_cats.items())}; labels would not match. "
                "Use files with the same 'categories' list."
            )

    @property
    def num_classes(self) -> int:
        """Number of foreground classes K (labels are 1..K)."""
        return self._reference_dataset().num_classes

    @property
    def class_names(self) -> list[str]:
        """Category names, index ``label - 1``."""
        return self._reference_dataset().class_names

    @property
    def label_to_category(self) -> dict[int, int]:
        """Contiguous label -> COCO category id."""
        return self._reference_dataset().label_to_category

    def setup(self, stage: str | None = None) -> None:
        """Build and check the datasets the stage needs ("fit": both given splits; otherwise validation).

        Raises:
            DatasetError: problems in a split (all of them listed, with file, record and fix).
        """
        if stage in (None, "fit") and self.options.train_ann is not None:
            _ = self.train_dataset
        if self.options.val_ann is not None:
            _ = self.val_dataset

    # ------------------------------------------------------------------ loaders
    def _loader_options(self) -> dict:
        workers = self.options.num_workers
        return {
            "num_workers": workers,
            "collate_fn": collate_detection,
            "pin_memory": self.pin_memory and torch.cuda.is_available(),
            "persistent_workers": workers > 0,
        }

    def train_dataloader(self) -> DataLoader:
        """Shuffled, resumable training loader over this rank's shard (batches of one orientation with
        ``aspect_ratio_grouping``)."""
        dataset = self.train_dataset
        groups = None
        if self.options.aspect_ratio_grouping:
            groups = orientation_groups(dataset.records.images.widths, dataset.records.images.heights)
        return resumable_train_loader(
            dataset, self.trainer, self.seed, self.batch_size, group_ids=groups, **self._loader_options()
        )

    def val_dataloader(self) -> DataLoader:
        """Validation loader in file order over this rank's unpadded shard."""
        return sharded_val_loader(self.val_dataset, self.trainer, self.options.val_batch_size, **self._loader_options())
