"""The checks of an annotation's ``segmentation``: a polygon list with a part of at least 3 points, or an RLE
(uncompressed, or compressed as pycocotools writes it) of the image's size whose runs cover it exactly.

Polygon parts with fewer than 3 points are not an error: the records leave them out
(:func:`removed_polygon_parts` counts them), since pycocotools would read a 4-number polygon as a box.
"""

from __future__ import annotations

from typing import Any

from sasa_det.data.coco.json_values import all_finite_numbers, all_natural_numbers

__all__ = ["removed_polygon_parts", "segmentation_problem"]


def _rle_string_counts(text: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, with bounds checks)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            if p >= len(text):
                raise ValueError("the string ends inside a number")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {text[p]!r} is not an RLE digit")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def segmentation_problem(segm: Any, height: Any, width: Any) -> tuple[str | None, int]:
    """``(what is wrong or None, number of polygon parts that will be removed)`` for one segmentation."""
    if isinstance(segm, list):
        if not segm:
            return "an empty polygon list", 0
        valid = 0
        for part in segm:
            if not isinstance(part, (list, tuple)) or not all_finite_numbers(part):
                return "a polygon part that is not a list of finite numbers", 0
            valid += len(part) >= 6 and len(part) % 2 == 0
        if valid == 0:
            return "no polygon part with at least 3 points (x, y pairs)", 0
        return None, len(segm) - valid
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = segm["size"]
        if list(size) != [height, width]:
            return f"an RLE of size {size}, not the image's [height, width] = [{height}, {width}]", 0
        counts = segm["counts"]
        try:
            runs = _rle_string_counts(counts) if isinstance(counts, str) else list(counts)
        except ValueError as err:
            return f"a compressed RLE string that cannot be decoded ({err})", 0
        if not all_natural_numbers(runs) or sum(runs) != height * width:
            return f"RLE run lengths that do not cover the {height}x{width} image exactly", 0
        return None, 0
    return (
        f"a segmentation that is neither a polygon list nor an RLE dict with 'counts' and 'size' ({type(segm).__name__})",
        0,
    )


def removed_polygon_parts(segm: Any) -> int:
    """Number of polygon parts with fewer than 3 points in a (valid) segmentation; they are removed."""
    if not isinstance(segm, list):
        return 0
    if len(segm) == 1 and len(segm[0]) >= 6 and len(segm[0]) % 2 == 0:  # most COCO objects: one valid part
        return 0
    return sum(1 for part in segm if not (len(part) >= 6 and len(part) % 2 == 0))
