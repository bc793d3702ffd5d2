"""Drawing predictions (boxes, labels, scores, masks) on images and saving them as a PNG grid, each image beside
its ground truth."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageColor, ImageDraw, ImageFont
from torchvision.utils import draw_segmentation_masks, make_grid

__all__ = [
    "MIN_DRAWN_SIDE",
    "draw_detections",
    "save_detection_grid",
    "save_prediction_grid",
    "save_png",
    "to_uint8_image",
]

# Distinct colours, indexed by label (cycled).
_PALETTE = tuple(
    ImageColor.getrgb(c)
    for c in "#e6194b #3cb44b #ffe119 #0082c8 #f58230 #911eb4 #46f0f0 #f032e6 #d2f53c #fabed4 #008080 #dcbeff".split()
)


def to_uint8_image(image: torch.Tensor) -> torch.Tensor:
    """Float image [3, H, W] in 0..1 (or uint8) -> uint8 [3, H, W] on the CPU."""
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        return image
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8)


def save_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save a uint8 [3, H, W] image as a PNG (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return path


#: Images whose longer side is below this are drawn enlarged (by a whole factor, nearest neighbour), so
#: that labels stay legible and do not cover small objects.
MIN_DRAWN_SIDE = 512


def _font(size: int):
    """PIL's built-in font at ``size`` pixels (its fixed small bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _contrast(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black for a light colour, white for a dark one (by luma): the outline and text drawn on ``colour``."""
    red, green, blue = colour
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


def _outlined_box(pen: ImageDraw.ImageDraw, box: Sequence[float], colour: tuple[int, int, int], width: int) -> None:
    """A ``width``-pixel box in ``colour`` between two 1-pixel lines of its contrast colour, so that it stays
    visible on a background of its own colour (a green class on grass)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    x2, y2 = max(x1, x2), max(y1, y2)
    pen.rectangle((x1 - 1, y1 - 1, x2 + 1, y2 + 1), outline=_contrast(colour), width=width + 2)
    pen.rectangle((x1, y1, x2, y2), outline=colour, width=width)


def _label_position(box: Sequence[float], text_size: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int]:
    """Top-left of a label: above the box, else below it, else inside its top edge; kept inside the image."""
    x1, y1, _, y2 = box
    text_w, text_h = text_size
    width, height = image_size
    if y1 - text_h - 2 >= 0:  # clear of the box's 1-pixel outline
        y = y1 - text_h - 2
    elif y2 + text_h + 2 <= height:
        y = y2 + 2
    else:
        y = y1 + 1
    x = min(max(0, x1), max(0, width - text_w))
    return int(x), int(y)


def draw_detections(
    image: torch.Tensor,
    prediction: Mapping[str, torch.Tensor],
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    box_width: int = 2,
    min_side: int = MIN_DRAWN_SIDE,
) -> torch.Tensor:
    """Draw one image's detections.

    Args:
        image: [3, H, W] float in 0..1 or uint8.
        prediction: ``boxes`` [N, 4] xyxy in this image's pixels, ``labels`` [N] (1..K), optional
            ``scores`` [N] (detections below ``score_threshold`` are skipped; ground-truth targets
            without scores are drawn in full) and optional ``masks`` [N, 1, H, W] / [N, H, W].
        class_names: names indexed by ``label - 1`` (default: the label number).
        min_side: an image whose longer side is shorter is enlarged by the smallest whole factor that
            reaches it (nearest neighbour) before drawing; 0 draws at the image's own size.

    Boxes are drawn in their class colour between two 1-pixel lines of a contrasting colour (black or white), and
    labels ("name score") in that contrasting colour on a tag of the class colour outlined the same way, so both
    stay visible on a background of the class colour. A tag sits above its box, or below it, or inside its top
    edge when the image has no room above or below, so it does not cover the object.

    Returns:
        uint8 [3, s·H, s·W] with ``s`` the enlargement factor (1 for images of at least ``min_side``).
    """
    canvas = to_uint8_image(image)
    scale = max(1, -(-int(min_side) // max(canvas.shape[1:]))) if min_side else 1
    if scale > 1:
        canvas = canvas.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    boxes = prediction["boxes"].detach().float().cpu() * scale
    labels = prediction["labels"].detach().cpu().tolist()
    scores = prediction.get("scores")
    keep = torch.ones(len(labels), dtype=torch.bool)
    if scores is not None:
        scores = scores.detach().float().cpu()
        keep = scores >= score_threshold
    index = keep.nonzero().flatten().tolist()
    if not index:
        return canvas
    colours = [_PALETTE[(labels[i] - 1) % len(_PALETTE)] for i in index]
    if prediction.get("masks") is not None:
        masks = prediction["masks"].detach().cpu()
        if masks.dim() == 4:
            masks = masks[:, 0]
        masks = masks[index] > mask_threshold
        if scale > 1:
            masks = masks.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        canvas = draw_segmentation_masks(canvas, masks, alpha=0.4, colors=colours)
    picture = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    pen = ImageDraw.Draw(picture)
    for i, colour in zip(index, colours):
        _outlined_box(pen, boxes[i].tolist(), colour, box_width)
    font = _font(max(10, min(18, max(picture.size) // 40)))
    for i, colour in zip(index, colours):
        name = class_names[labels[i] - 1] if class_names and 0 < labels[i] <= len(class_names) else str(labels[i])
        text = f"{name} {scores[i]:.2f}" if scores is not None else name
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        size = (right - left + 4, bottom - top + 4)
        x, y = _label_position(boxes[i].tolist(), size, picture.size)
        pen.rectangle((x, y, x + size[0] - 1, y + size[1] - 1), fill=colour, outline=_contrast(colour))
        pen.text((x + 2 - left, y + 2 - top), text, fill=_contrast(colour), font=font)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)


def _ground_truth(target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A dataset target as something :func:`draw_detections` draws in full (boxes, labels, masks; no scores)."""
    return {key: target[key] for key in ("boxes", "labels", "masks") if target.get(key) is not None}


def save_detection_grid(
    images: Sequence[torch.Tensor],
    predictions: Sequence[Mapping[str, torch.Tensor]],
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    nrow: int | None = None,
    targets: Sequence[Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Draw each image's detections and save them as one PNG grid (smaller images are zero-padded
    to the largest). Returns the written path.

    With ``targets`` (each image's ground truth: ``boxes`` in its pixels, ``labels``, optional ``masks``),
    each image is drawn as a pair: on the left its ground truth, on the right its detections scoring at least
    ``score_threshold``, side by side (twice the width), so that missed objects show. ``nrow``: images
    (pairs) per row, 4 by default (2 for pairs)."""
    if len(images) != len(predictions) or not images or (targets is not None and len(targets) != len(images)):
        raise ValueError(
            f"need as many predictions (and targets, when given) as images, and at least one image; got "
            f"{len(images)} images, {len(predictions)} predictions"
            + ("" if targets is None else f", {len(targets)} targets")
            + "."
        )
    drawn = [draw_detections(img, pred, class_names, score_threshold) for img, pred in zip(images, predictions)]
    if targets is not None:
        truth = [draw_detections(img, _ground_truth(target), class_names) for img, target in zip(images, targets)]
        drawn = [torch.cat([left, right], dim=2) for left, right in zip(truth, drawn)]
    height = max(d.shape[1] for d in drawn)
    width = max(d.shape[2] for d in drawn)
    padded = [F.pad(d, (0, width - d.shape[2], 0, height - d.shape[1])) for d in drawn]
    nrow = nrow or (2 if targets is not None else 4)
    return save_png(make_grid(torch.stack(padded), nrow=nrow, padding=2), path)


@torch.no_grad()
def save_prediction_grid(
    model: torch.nn.Module,
    dataset: Sequence,
    path: str | os.PathLike,
    count: int,
    score_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
    ground_truth: bool = True,
) -> Path | None:
    """Run ``model`` (a detector taking a list of ``[3, H, W]`` images) on the first ``count`` images of
    ``dataset`` (items ``(image, target)``) and save them with their detections as one PNG grid; with
    ``ground_truth``, each image as a pair: its ground truth on the left, the detections on the right
    (:func:`save_detection_grid`).

    Returns the path, or None when there is nothing to draw. ``model`` is left in the mode it was in.
    """
    count = min(int(count), len(dataset))
    if count <= 0:
        return None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        items = [dataset[i] for i in range(count)]
        images = [item[0] for item in items]
        predictions = [{k: v.cpu() for k, v in p.items()} for p in model([im.to(device) for im in images])]
    finally:
        model.train(was_training)
    targets = [item[1] for item in items] if ground_truth else None
    return save_detection_grid(
        images, predictions, path, class_names=class_names, score_threshold=score_threshold, targets=targets
    )
