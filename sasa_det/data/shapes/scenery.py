"""What the harder shapes set draws besides the objects: textured backgrounds and distractors.

Both are painted on the float canvas before the shapes, so a shape's annotation (its visible pixels) is never
covered by them. Each draws only from the image's random stream, so the dataset stays deterministic by seed.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["add_texture", "draw_clutter", "object_colour"]


def object_colour(rng: np.random.Generator) -> np.ndarray:
    """A bright RGB colour (mean >= 140) that stands out from the dark background: shapes and distractors."""
    colour = rng.uniform(60, 255, size=3)
    while colour.mean() < 140:
        colour = rng.uniform(60, 255, size=3)
    return colour


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    ramp = math.cos(angle) * xx + math.sin(angle) * yy
    return rng.uniform(30, 70) * (ramp - ramp.mean())


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(4, 24)
    yy, xx = np.mgrid[0:size, 0:size]
    phase = (math.cos(angle) * xx + math.sin(angle) * yy) * 2 * math.pi / period
    return rng.uniform(15, 35) * np.sin(phase + rng.uniform(0, 2 * math.pi))


def _blobs(rng: np.random.Generator, size: int) -> np.ndarray:
    cells = int(rng.integers(3, 9))
    grid = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC), dtype=np.float64)
    return rng.uniform(25, 50) * smooth


_TEXTURES = (_gradient, _stripes, _blobs)


def add_texture(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Add a random gradient, stripes or low-frequency blobs (greyscale, with a per-channel tint) to
    ``canvas`` [H, W, 3] in place."""
    size = canvas.shape[0]
    pattern = _TEXTURES[int(rng.integers(0, len(_TEXTURES)))](rng, size)
    canvas += pattern[:, :, None] * rng.uniform(0.6, 1.0, size=3)


def _distractor(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int) -> None:
    kind = int(rng.integers(0, 4))
    x, y = rng.uniform(0, size, size=2)
    width = int(rng.integers(1, 4))
    if kind == 0:  # a straight stroke
        length, angle = rng.uniform(0.1, 0.5) * size, rng.uniform(0, 2 * math.pi)
        draw.line([(x, y), (x + length * math.cos(angle), y + length * math.sin(angle))], fill=255, width=width)
    elif kind == 1:  # a polyline scribble
        points = [(float(x), float(y))]
        for _ in range(int(rng.integers(2, 5))):
            points.append(tuple(float(v) for v in np.asarray(points[-1]) + rng.normal(0, 0.12 * size, size=2)))
        draw.line(points, fill=255, width=width)
    elif kind == 2:  # a ring: the outline of a circle, not a filled one
        r = rng.uniform(0.03, 0.15) * size
        draw.ellipse([x - r, y - r, x + r, y + r], outline=255, width=width)
    else:  # an arc or a small dot
        r = rng.uniform(0.03, 0.2) * size
        start = rng.uniform(0, 360)
        if rng.uniform() < 0.5:
            draw.arc([x - r, y - r, x + r, y + r], start, start + rng.uniform(60, 240), fill=255, width=width)
        else:
            dot = rng.uniform(1, 3)
            draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=255)


def draw_clutter(rng: np.random.Generator, canvas: np.ndarray, most: int) -> None:
    """Paint ``0..most`` distractors (strokes, scribbles, rings, arcs, dots in object colours) on ``canvas``
    [H, W, 3] in place."""
    size = canvas.shape[0]
    for _ in range(int(rng.integers(0, most + 1))):
        layer = Image.new("L", (size, size), 0)
        _distractor(rng, ImageDraw.Draw(layer), size)
        mask = np.asarray(layer) > 127
        colour = object_colour(rng)
        canvas[mask] = colour + rng.normal(0.0, 8.0, size=(int(mask.sum()), 3))
