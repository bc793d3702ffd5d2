"""Drawing an attention map over its image: one panel per head and their average, the query marked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw

__all__ = ["save_attention_panels"]


def _overlay(image: torch.Tensor, weights: torch.Tensor, query: tuple[int, int], title: str) -> Image.Image:
    """uint8 ``[3, H, W]`` image darkened, with ``weights`` ``[H, W]`` (normalised to its maximum) in red-yellow."""
    heat = weights / weights.max().clamp_min(1e-12)
    base = image.float() * 0.45
    colour = torch.stack([torch.full_like(heat, 255.0), heat * 255.0, torch.zeros_like(heat)])
    mixed = base * (1 - heat) + (base * 0.2 + colour * 0.8) * heat
    panel = Image.fromarray(mixed.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(panel)
    y, x = query
    arm = max(2, min(panel.size) // 30)
    draw.line([(x - arm, y), (x + arm, y)], fill=(0, 255, 255), width=1)
    draw.line([(x, y - arm), (x, y + arm)], fill=(0, 255, 255), width=1)
    draw.text((2, 1), title, fill=(255, 255, 255))
    return panel


def save_attention_panels(
    image: torch.Tensor,
    weights: torch.Tensor,
    query: tuple[int, int],
    path: str | os.PathLike,
    heads: Sequence[int] | None = None,
    scale: int = 1,
) -> Path:
    """Save a row of panels: the image with the query marked, then each head in ``heads`` (default all)
    and the heads' average, drawn over the image.

    Args:
        image: uint8 ``[3, H, W]``.
        weights: ``[heads, H, W]`` attention over the image pixels.
        query: ``(y, x)`` pixel whose attention is shown.
        scale: integer enlargement of every panel (nearest), for small images.
    """
    chosen = list(range(weights.shape[0])) if heads is None else list(heads)
    panels = [_overlay(image, torch.zeros(image.shape[1:]), query, "image")]
    panels += [_overlay(image, weights[h], query, f"head {h}") for h in chosen]
    panels.append(_overlay(image, weights.mean(dim=0), query, "mean"))
    if scale > 1:
        panels = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in panels]
    sheet = Image.new("RGB", (sum(p.width for p in panels) + 2 * (len(panels) - 1), panels[0].height), (255, 255, 255))
    x = 0
    for panel in panels:
        sheet.paste(panel, (x, 0))
        x += panel.width + 2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
