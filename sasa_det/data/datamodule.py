"""LightningDataModule over COCO-format train/val sets."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader

from sasa_det.data.coco import CocoDetectionDataset
from sasa_det.data.collate import collate_detection
from sasa_det.data.sampling import resumable_train_loader, sharded_val_loader
from sasa_det.data.transforms import build_train_transforms, build_val_transforms
from sasa_det.data.validation import BAD_RECORD_POLICIES, CHECK_LEVELS, DatasetReport, default_cache_dir

__all__ = ["CocoDataModule"]


@rank_zero_only
def _print_report(report: DatasetReport, report_dir: str | os.PathLike | None) -> None:
    """Print a split's report and write it to ``report_dir`` (global rank 0 only)."""
    where = f"\n  (written to {report.write(report_dir)})" if report_dir is not None else ""
    print(report.format() + where, flush=True)


class CocoDataModule(pl.LightningDataModule):
    """Train and validation loaders for :class:`CocoDetectionDataset`.

    Batches are ``(images, targets)`` lists (see :func:`collate_detection`). The training loader is a
    :func:`~sasa_det.data.sampling.resumable_train_loader`: the epoch's order and every image's augmentation
    follow from ``seed`` alone, each rank takes its shard, and a run resumed mid-epoch continues with the
    very batches the uninterrupted run would have seen. The validation loader shards the set across ranks
    without padding (every image evaluated once). Validation images keep their original size. The trainer
    is built with ``use_distributed_sampler=False`` (these loaders shard themselves).

    Either split may be omitted (``None`` paths): e.g. evaluation needs only the validation set. The
    datasets are built lazily on first use (``setup`` or the properties below), so ``num_classes`` is
    available before the trainer starts; when both splits exist their categories must agree.

    Args:
        train_images, train_ann: image folder and instances json of the training split.
        val_images, val_ann: same for the validation split.
        batch_size: training images per device.
        val_batch_size: validation images per device (default: ``batch_size``).
        num_workers: loader worker processes (persistent when > 0).
        min_sizes, max_size, flip_prob: training augmentation, see :func:`build_train_transforms`.
        with_masks: load instance masks (Mask R-CNN).
        keep_empty_train: keep training images without annotations (validation always keeps them).
        pin_memory: pin batches for faster host-to-GPU copies (ignored without CUDA).
        seed: seed of the training order and augmentations.
        check_images: when a split is built, open every image: ``"header"`` (size after EXIF
            orientation, mode, JPEG/PNG end marker; fast), ``"full"`` (decode every pixel) or ``"off"``.
        on_bad_records: ``"error"`` (default): any problem found stops before training with the full
            list (file, record, fix); ``"drop"``: the bad records are removed and listed in the report,
            and a training image that fails later (changed on disk) is skipped with a warning naming it.
            Validation images never are: a failing one stops the run with its file and record.
        report_dir: where each split's ``data_report_<split>.{txt,json}`` is written (and the full list
            of problems when it is too long for the error message); ``None``: not written.
        check_cache: cache the image check (keyed by each file's size and modification time).
        check_cache_dir: the cache folder (default: :func:`~sasa_det.data.validation.default_cache_dir`).
        check_workers: threads for the image check (default ``min(8, cpus)``).
        progress: progress bar while checking images (on a terminal).

    Building a split prints its :class:`~sasa_det.data.validation.DatasetReport` (what was fixed,
    dropped or noticed, with counts and the first record ids) on global rank 0.
    """

    def __init__(
        self,
        train_images: str | os.PathLike | None,
        train_ann: str | os.PathLike | None,
        val_images: str | os.PathLike | None,
        val_ann: str | os.PathLike | None,
        batch_size: int = 2,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        min_sizes: Sequence[int] = (800,),
        max_size: int | None = 1333,
        flip_prob: float = 0.5,
        with_masks: bool = False,
        keep_empty_train: bool = False,
        pin_memory: bool = True,
        seed: int = 0,
        check_images: str = "header",
        on_bad_records: str = "error",
        report_dir: str | os.PathLike | None = None,
        check_cache: bool = True,
        check_cache_dir: str | os.PathLike | None = None,
        check_workers: int | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if (train_images is None) != (train_ann is None):
            raise ValueError("train_images and train_ann must be given together (or both None).")
        if (val_images is None) != (val_ann is None):
            raise ValueError("val_images and val_ann must be given together (or both None).")
        if train_ann is None and val_ann is None:
            raise ValueError(
                "CocoDataModule needs at least one split: give train_images/train_ann or val_images/val_ann."
            )
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(f"batch sizes must be >= 1, got batch_size={batch_size}, val_batch_size={val_batch_size}.")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
        if check_images not in CHECK_LEVELS:
            raise ValueError(f"check_images must be one of {CHECK_LEVELS}, got {check_images!r}.")
        if on_bad_records not in BAD_RECORD_POLICIES:
            raise ValueError(f"on_bad_records must be one of {BAD_RECORD_POLICIES}, got {on_bad_records!r}.")
        self.check_images = check_images
        self.on_bad_records = on_bad_records
        self.report_dir = report_dir
        self.check_cache_dir = (check_cache_dir or default_cache_dir()) if check_cache else None
        self.check_workers = check_workers
        self.progress = progress
        self.train_images, self.train_ann = train_images, train_ann
        self.val_images, self.val_ann = val_images, val_ann
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.with_masks = with_masks
        self.keep_empty_train = keep_empty_train
        self.pin_memory = pin_memory
        self.seed = int(seed)
        # Built now so that bad augmentation settings fail before any file is read.
        self.train_transforms = build_train_transforms(min_sizes=min_sizes, max_size=max_size, flip_prob=flip_prob)
        self.val_transforms = build_val_transforms()
        self.reports: dict[str, DatasetReport] = {}
        self._train_dataset: CocoDetectionDataset | None = None
        self._val_dataset: CocoDetectionDataset | None = None

    # ------------------------------------------------------------------ datasets
    @property
    def train_dataset(self) -> CocoDetectionDataset:
        """Training split (built on first access)."""
        if self.train_ann is None:
            raise ValueError("This CocoDataModule has no training split (train_images/train_ann are None).")
        if self._train_dataset is None:
            self._train_dataset = self._build(
                "train", self.train_images, self.train_ann, self.train_transforms, self.keep_empty_train
            )
            self._check_categories()
        return self._train_dataset

    @property
    def val_dataset(self) -> CocoDetectionDataset:
        """Validation split, every image kept at its original size (built on first access)."""
        if self.val_ann is None:
            raise ValueError("This CocoDataModule has no validation split (val_images/val_ann are None).")
        if self._val_dataset is None:
            self._val_dataset = self._build("val", self.val_images, self.val_ann, self.val_transforms, True)
            self._check_categories()
        return self._val_dataset

    def _build(self, split: str, images, ann, transforms, keep_empty: bool) -> CocoDetectionDataset:
        """Build and check one split, then print its report (rank 0) and write it to ``report_dir``."""
        dataset = CocoDetectionDataset(
            images,
            ann,
            transforms=transforms,
            with_masks=self.with_masks,
            keep_empty=keep_empty,
            check_images=self.check_images,
            on_bad_records=self.on_bad_records,
            # Evaluation must see every validation image; only training images may be skipped.
            on_load_error="skip" if split == "train" and self.on_bad_records == "drop" else "error",
            cache_dir=self.check_cache_dir,
            check_workers=self.check_workers,
            progress=self.progress and rank_zero_only.rank == 0,
            name=split,
            report_dir=self.report_dir,
        )
        self.reports[split] = dataset.report
        _print_report(dataset.report, self.report_dir)
        return dataset

    def _reference_dataset(self) -> CocoDetectionDataset:
        return self.val_dataset if self.val_ann is not None else self.train_dataset

    def _check_categories(self) -> None:
        if self._train_dataset is None or self._val_dataset is None:
            return
        train_cats = {c: self._train_dataset.coco.cats[c].get("name") for c in self._train_dataset.category_to_label}
        val_cats = {c: self._val_dataset.coco.cats[c].get("name") for c in self._val_dataset.category_to_label}
        if train_cats != val_cats:
            raise ValueError(
                f"Train ({self.train_ann}) and validation ({self.val_ann}) annotation files define different "
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
        if stage in (None, "fit") and self.train_ann is not None:
            _ = self.train_dataset
        if self.val_ann is not None:
            _ = self.val_dataset

    # ------------------------------------------------------------------ loaders
    def _loader_options(self) -> dict:
        return {
            "num_workers": self.num_workers,
            "collate_fn": collate_detection,
            "pin_memory": self.pin_memory and torch.cuda.is_available(),
            "persistent_workers": self.num_workers > 0,
        }

    def train_dataloader(self) -> DataLoader:
        """Shuffled, resumable training loader over this rank's shard."""
        return resumable_train_loader(
            self.train_dataset, self.trainer, self.seed, self.batch_size, **self._loader_options()
        )

    def val_dataloader(self) -> DataLoader:
        """Validation loader in file order over this rank's unpadded shard."""
        return sharded_val_loader(self.val_dataset, self.trainer, self.val_batch_size, **self._loader_options())
