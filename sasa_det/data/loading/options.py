"""The options of the data modules (the ``data`` section of a detection or a classification config) and the
rules of their values, shared with the code that uses them. No torch: a config is checked without it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from sasa_det.choices import OptionError
from sasa_det.data.coco.reader import DatasetChecks

__all__ = ["CocoDataOptions", "ImageFolderDataOptions", "check_batch_sizes", "check_train_resize"]


def check_batch_sizes(batch_size: int, val_batch_size: int | None) -> None:
    """Training and validation images per device are >= 1 (``None``: the validation size follows training).

    Raises:
        OptionError: naming the option (``{key}`` in its message stands for its config key).
    """
    if batch_size < 1:
        raise OptionError("batch_size", f"{{key}} must be >= 1, got {batch_size}")
    if val_batch_size is not None and val_batch_size < 1:
        raise OptionError("val_batch_size", f"{{key}} must be >= 1, got {val_batch_size}")


def check_train_resize(min_sizes: Sequence[int], flip_prob: float) -> None:
    """The training sizes and flip probability :func:`build_train_transforms` accepts.

    Raises:
        OptionError: naming the option (``{key}`` in its message stands for its config key).
    """
    sizes = [int(s) for s in min_sizes]
    if not sizes or any(s <= 0 for s in sizes):
        raise OptionError(
            "min_sizes", f"{{key}} must list at least one positive training size, e.g. [800]; got {sizes}"
        )
    if not 0.0 <= flip_prob <= 1.0:
        raise OptionError("flip_prob", f"{{key}} must be in [0, 1], got {flip_prob}")


@dataclass
class CocoDataOptions(DatasetChecks):
    """What :class:`CocoDataModule` reads and how it loads it (the COCO part of the ``data`` config section);
    the checks of every split come first (:class:`~sasa_det.data.coco.reader.DatasetChecks`)."""

    #: training image directory (COCO format)
    train_images: Optional[str] = None
    #: training instances json
    train_ann: Optional[str] = None
    #: validation image directory
    val_images: Optional[str] = None
    #: validation instances json
    val_ann: Optional[str] = None
    #: training images per device (global batch = batch_size * devices * num_nodes)
    batch_size: int = 2
    #: validation images per device
    val_batch_size: int = 2
    #: data-loader workers per device
    num_workers: int = 2
    #: training shorter side, sampled per image (multiscale jitter)
    min_sizes: list[int] = field(default_factory=lambda: [800])
    #: training longest-side cap
    max_size: int = 1333
    #: horizontal-flip probability in training
    flip_prob: float = 0.5
    #: load instance masks; null = whatever the model needs (Mask R-CNN)
    with_masks: Optional[bool] = None
    #: keep training images without annotations
    keep_empty_train: bool = False
    #: training batches of one orientation (landscape / portrait), less padding; same order on resume and DDP
    aspect_ratio_grouping: bool = False

    def validate(self) -> None:
        """Batch sizes, and the training resize and flip (:func:`check_train_resize`)."""
        check_batch_sizes(self.batch_size, self.val_batch_size)
        check_train_resize(self.min_sizes, self.flip_prob)


@dataclass
class ImageFolderDataOptions:
    """What :class:`ImageFolderDataModule` reads: the ``data`` section of a classification config."""

    #: ImageFolder training root (one sub-folder per class)
    train_dir: Optional[str] = None
    #: ImageFolder validation root with the same class folders
    val_dir: Optional[str] = None
    #: training images per device (global batch = batch_size * devices * num_nodes)
    batch_size: int = 2
    #: validation images per device
    val_batch_size: int = 2
    #: data-loader workers per device
    num_workers: int = 2

    def validate(self) -> None:
        """Batch sizes >= 1."""
        check_batch_sizes(self.batch_size, self.val_batch_size)
