"""Anchor generators from per-level base sizes (``model.anchor_sizes``): torchvision's layouts, other sizes.

torchvision's detectors are sized for COCO images of 800 px: base anchors of 32, 64, 128, 256, 512 px on the five
pyramid levels. On small images (the 128-px shapes) objects of 8 to 30 px overlap no such anchor by IoU 0.5, and
the largest levels' anchors are bigger than the image; ``anchor_sizes`` scales them as detectron2's
``MODEL.ANCHOR_GENERATOR.SIZES`` does. ``None`` keeps torchvision's anchors exactly.
"""

from collections.abc import Sequence
from typing import Optional

from torchvision.models.detection.anchor_utils import AnchorGenerator

__all__ = ["ASPECT_RATIOS", "PYRAMID_LEVELS", "check_anchor_sizes", "retinanet_anchors", "rpn_anchors"]

ASPECT_RATIOS = (0.5, 1.0, 2.0)  # height / width, torchvision's for both architectures
PYRAMID_LEVELS = 5  # RetinaNet's P3-P7, the R-CNNs' RPN on P2-P6: one base size per level


def check_anchor_sizes(sizes: Optional[Sequence[int]]) -> Optional[tuple[int, ...]]:
    """``sizes`` as a tuple of 5 positive ints, one base size per pyramid level (``None`` stays ``None``)."""
    if sizes is None:
        return None
    sizes = tuple(sizes)
    valid = all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)
    if len(sizes) != PYRAMID_LEVELS or not valid:
        raise ValueError(
            f"model.anchor_sizes must be {PYRAMID_LEVELS} positive ints, one base size in pixels per pyramid "
            f"level (torchvision's: [32, 64, 128, 256, 512]), got {list(sizes)!r}"
        )
    return sizes


def retinanet_anchors(sizes: Optional[Sequence[int]]) -> Optional[AnchorGenerator]:
    """RetinaNet's anchors on P3-P7: each base size ``s`` at three octave scales ``s·2^(0, 1/3, 2/3)`` (rounded
    down as torchvision) and three aspect ratios, 9 per location; ``None`` for torchvision's default."""
    checked = check_anchor_sizes(sizes)
    if checked is None:
        return None
    per_level = tuple((s, int(s * 2 ** (1.0 / 3)), int(s * 2 ** (2.0 / 3))) for s in checked)
    return AnchorGenerator(per_level, (ASPECT_RATIOS,) * len(per_level))


def rpn_anchors(sizes: Optional[Sequence[int]]) -> Optional[AnchorGenerator]:
    """The RPN's anchors on P2-P6: one base size per level at three aspect ratios, 3 per location; ``None`` for
    torchvision's default."""
    checked = check_anchor_sizes(sizes)
    if checked is None:
        return None
    return AnchorGenerator(tuple((s,) for s in checked), (ASPECT_RATIOS,) * len(checked))
