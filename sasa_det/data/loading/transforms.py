"""Detection transforms built from ``torchvision.transforms.v2``.

The dataset hands the transforms a ``tv_tensors.Image`` and a target whose ``boxes`` are
``tv_tensors.BoundingBoxes`` and ``masks`` ``tv_tensors.Mask``, so every geometric transform here moves
boxes and masks together with the pixels.

Training resizes (multiscale jitter) and flips *here*, on the data-loader workers; the detector is
built to skip its own resize in training. Validation does **not** resize: the detector resizes in eval
mode to its ``min_size``/``max_size`` and maps its predictions back to the size of the image it was
given, so validation predictions come out in original-image coordinates, exactly what COCOeval
compares against the ground-truth file.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from sasa_det.data.loading.options import check_train_resize

__all__ = ["build_train_transforms", "build_val_transforms"]


def build_train_transforms(
    min_sizes: Sequence[int] = (800,),
    max_size: int | None = 1333,
    flip_prob: float = 0.5,
    min_box_size: float = 1.0,
) -> v2.Compose:
    """Training pipeline: multiscale jitter, horizontal flip, box sanitising, float conversion.

    Args:
        min_sizes: candidate lengths of the shorter image side; one is drawn per image (multiscale
            jitter). A single value is a plain "resize by shorter side". For a range use e.g.
            ``range(480, 801, 32)``.
        max_size: cap on the longer side after resizing (the shorter side shrinks to respect it);
            ``None`` for no cap.
        flip_prob: probability of a horizontal flip (0 disables it).
        min_box_size: boxes (and their labels and masks) smaller than this after resizing are
            dropped by ``SanitizeBoundingBoxes`` (torchvision's detectors reject empty boxes).

    Input ``(tv_tensors.Image uint8 [3,H,W], target)``; output image float32 [3,H',W'] in 0..1, with
    ``boxes`` / ``masks`` resized and flipped consistently.
    """
    check_train_resize(min_sizes, flip_prob)
    sizes = [int(s) for s in min_sizes]
    if max_size is not None and max_size < max(sizes):
        raise ValueError(f"max_size ({max_size}) must be >= the largest of min_sizes ({max(sizes)}), or None.")
    if min_box_size < 1:
        raise ValueError(f"min_box_size must be >= 1 (SanitizeBoundingBoxes' limit), got {min_box_size}.")
    steps: list[v2.Transform] = [v2.RandomShortestSize(min_size=sizes, max_size=max_size, antialias=True)]
    if flip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(p=flip_prob))
    # Removes boxes that resizing made degenerate, with their labels (the target's "labels" key) and
    # their per-instance masks.
    steps.append(v2.SanitizeBoundingBoxes(min_size=min_box_size))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def build_val_transforms() -> v2.Compose:
    """Validation pipeline: conversion to float32 in 0..1 only; no resize (see the module docstring)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])
