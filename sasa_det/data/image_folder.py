"""Image-folder classification data (``root/<class>/<image>`` layout) for backbone pre-training.

Images are normalized with the ImageNet mean and standard deviation, the same normalization torchvision's
detection models apply internally to their 0..1 inputs, so a backbone trained here sees the same input
statistics inside a detector.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytorch_lightning as pl
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from sasa_det.data.loading.options import ImageFolderDataOptions, check_batch_sizes
from sasa_det.data.loading.sampling import resumable_train_loader, sharded_val_loader

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SYNTHETIC_CLASSES",
    "ImageFolderDataModule",
    "ImageFolderDataOptions",
    "check_image_folder",
    "classification_transforms",
    "make_image_folder_dataset",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_EXTENSIONS = datasets.folder.IMG_EXTENSIONS


def classification_transforms(image_size: int, train: bool, min_crop_scale: float = 0.08) -> T.Compose:
    """The standard ImageNet pipeline producing normalized ``[3, image_size, image_size]`` tensors.

    Training: random-resized crop (area scale ``min_crop_scale``..1; 0.08 is the usual ImageNet value)
    and horizontal flip.
    Evaluation: resize the shorter side to ``image_size / 0.875`` and center-crop ``image_size``.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if not 0.0 < min_crop_scale <= 1.0:
        raise ValueError(f"min_crop_scale must be in (0, 1], got {min_crop_scale}")
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        return T.Compose(
            [
                T.RandomResizedCrop(image_size, scale=(min_crop_scale, 1.0)),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                normalize,
            ]
        )
    return T.Compose([T.Resize(round(image_size / 0.875)), T.CenterCrop(image_size), T.ToTensor(), normalize])


def check_image_folder(root: str | os.PathLike, what: str = "image folder") -> list[str]:
    """Check that ``root`` holds class sub-folders with at least one image; return the class names.

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a directory.
        ValueError: no class sub-folder, or no image file (extensions of torchvision's ImageFolder) in any.
    """
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {str(root)!r} does not exist or is not a directory")
    classes = sorted(entry.name for entry in path.iterdir() if entry.is_dir())
    if not classes:
        raise ValueError(f"{what} {str(root)!r} has no class sub-folders (expected root/<class>/<image>)")
    has_image = any(
        f.lower().endswith(_EXTENSIONS) for c in classes for _, _, files in os.walk(path / c) for f in files
    )
    if not has_image:
        raise ValueError(
            f"{what} {str(root)!r} has class folders {classes[:10]} but no image ({', '.join(_EXTENSIONS)})"
        )
    return classes


class ImageFolderDataModule(pl.LightningDataModule):
    """Train/validation loaders over two ``torchvision.datasets.ImageFolder`` trees.

    Batches are ``(images [N, 3, image_size, image_size] float, normalized; labels [N] int64)``.

    Args:
        train_dir: training root (``train_dir/<class>/<image>``).
        val_dir: validation root with the same class folders.
        image_size: training crop and evaluation size in pixels.
        batch_size: training images per device.
        num_workers: loader workers per device.
        val_batch_size: validation images per device (default: ``batch_size``).
        min_crop_scale: smallest area fraction of the training random-resized crop.
        seed: seed of the training order and augmentations (resumable, see :mod:`sasa_det.data.loading.sampling`).

    Attributes (after :meth:`setup`; ``num_classes``/``class_names`` right away):
        ``train_dataset``, ``val_dataset``, ``num_classes``, ``class_names``.

    Raises:
        FileNotFoundError / ValueError: a folder is missing or empty, or the two trees' classes differ.
    """

    def __init__(
        self,
        train_dir: str | os.PathLike,
        val_dir: str | os.PathLike,
        image_size: int = 224,  # both papers' ImageNet resolution
        batch_size: int = 32,
        num_workers: int = 4,
        val_batch_size: int | None = None,
        min_crop_scale: float = 0.08,  # the usual ImageNet Inception-style crop
        seed: int = 0,
    ):
        super().__init__()
        check_batch_sizes(batch_size, val_batch_size)
        self.train_dir = str(train_dir)
        self.val_dir = str(val_dir)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.min_crop_scale = float(min_crop_scale)
        self.seed = int(seed)
        self.class_names = check_image_folder(self.train_dir, "training folder")
        val_classes = check_image_folder(self.val_dir, "validation folder")
        if val_classes != self.class_names:
            raise ValueError(
                f"training and validation folders have different classes: {self.class_names[:10]} vs {val_classes[:10]}"
            )
        self.num_classes = len(self.class_names)
        self.train_dataset: datasets.ImageFolder | None = None
        self.val_dataset: datasets.ImageFolder | None = None

    def setup(self, stage: str | None = None) -> None:
        """Create the datasets (once)."""
        if self.train_dataset is None:
            self.train_dataset = datasets.ImageFolder(
                self.train_dir, classification_transforms(self.image_size, True, self.min_crop_scale)
            )
            self.val_dataset = datasets.ImageFolder(self.val_dir, classification_transforms(self.image_size, False))

    def train_dataloader(self) -> DataLoader:
        """Shuffled, resumable training loader over this rank's shard (last partial batch dropped when the set
        holds more than one batch: BatchNorm cannot train on a single image)."""
        self.setup()
        return resumable_train_loader(
            self.train_dataset,
            self.trainer,
            self.seed,
            self.batch_size,
            num_workers=self.num_workers,
            drop_last=len(self.train_dataset) > self.batch_size,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation loader over this rank's unpadded shard: under DDP every image is evaluated once."""
        self.setup()
        return sharded_val_loader(
            self.val_dataset,
            self.trainer,
            self.val_batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


# Synthetic classes: a filled shape of one colour on a noisy grey background; colour and shape both
# identify the class, so even a tiny network learns it in a few dozen steps.
SYNTHETIC_CLASSES = {
    "red_circle": ((220, 40, 40), "circle"),
    "green_square": ((40, 200, 60), "square"),
    "blue_triangle": ((50, 70, 220), "triangle"),
    "yellow_circle": ((230, 210, 40), "circle"),
}


def _draw_example(rng: random.Random, image_size: int, colour, shape: str) -> Image.Image:
    base = rng.randint(90, 160)
    image = Image.new("RGB", (image_size, image_size), (base, base, base))
    pixels = image.load()
    for _ in range(image_size * image_size // 8):  # sparse salt-and-pepper noise
        x, y = rng.randrange(image_size), rng.randrange(image_size)
        v = rng.randint(0, 255)
        pixels[x, y] = (v, v, v)
    draw = ImageDraw.Draw(image)
    size = rng.uniform(0.35, 0.7) * image_size
    x0 = rng.uniform(0, image_size - size)
    y0 = rng.uniform(0, image_size - size)
    box = (x0, y0, x0 + size, y0 + size)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x0 + size / 2, y0), (x0, y0 + size), (x0 + size, y0 + size)], fill=colour)
    return image


def make_image_folder_dataset(
    root: str | os.PathLike,
    num_train_per_class: int = 32,
    num_val_per_class: int = 8,
    image_size: int = 32,
    num_classes: int = 3,
    seed: int = 0,
) -> dict[str, str]:
    """Write a tiny synthetic ImageFolder dataset: ``root/{train,val}/<class>/<index>.png``.

    Classes are the first ``num_classes`` of :data:`SYNTHETIC_CLASSES` (a coloured shape on noise). The
    content depends only on the arguments (deterministic by ``seed``). Returns
    ``{"train": train_dir, "val": val_dir}``.
    """
    if not 1 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"num_classes must be in 1..{len(SYNTHETIC_CLASSES)}, got {num_classes}")
    if num_train_per_class < 1 or num_val_per_class < 1 or image_size < 8:
        raise ValueError("need >= 1 image per class and split, and image_size >= 8")
    rng = random.Random(seed)
    paths = {}
    for split, count in (("train", num_train_per_class), ("val", num_val_per_class)):
        split_dir = Path(root) / split
        for name in list(SYNTHETIC_CLASSES)[:num_classes]:
            colour, shape = SYNTHETIC_CLASSES[name]
            class_dir = split_dir / name
            class_dir.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                _draw_example(rng, image_size, colour, shape).save(class_dir / f"{index:04d}.png")
        paths[split] = str(split_dir)
    return paths
