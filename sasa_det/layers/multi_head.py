"""What a multi-head attention layer checks of its widths: positive channels, split evenly into heads."""

from __future__ import annotations

__all__ = ["head_width"]


def head_width(in_channels: int, out_channels: int, heads: int) -> int:
    """The per-head width ``out_channels / heads``.

    Raises:
        ValueError: a channel count below 1, or ``heads`` that do not divide ``out_channels``.
    """
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
    if heads < 1 or out_channels % heads != 0:
        raise ValueError(f"out_channels={out_channels} must be divisible by heads={heads}")
    return out_channels // heads
