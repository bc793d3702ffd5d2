"""The options of the synthetic shapes dataset (the ``data.shapes`` config section), in a module without torch
or numpy, so a config is read and checked without them.

One set of defaults serves the config section, :func:`~sasa_det.data.shapes.make_shapes_dataset` and
``tools/make_shapes.py``. The defaults draw the demo set: 1-4 well separated circles, squares and triangles on
a plain noisy background. The options after ``classes`` make it harder (``configs/_base_/datasets/shapes_hard.yaml``):
a wide, small-object-heavy scale range, overlapping objects, distractors and textured backgrounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sasa_det.choices import OptionError, choice

__all__ = ["SHAPE_CLASSES", "ShapesOptions"]

#: Every shape the generator can draw; ``classes`` picks some.
SHAPE_CLASSES = ("circle", "square", "triangle", "star", "diamond")


@dataclass
class ShapesOptions:
    """Synthetic shapes dataset generated on first use (:func:`~sasa_det.data.shapes.make_shapes_dataset`)."""

    #: directory to generate into / reuse; null = do not use shapes
    root: Optional[str] = None
    #: training images
    num_train: int = 1000
    #: validation images
    num_val: int = 200
    #: image side in pixels
    image_size: int = 128
    #: generator seed (the dataset is deterministic by seed)
    seed: int = 0
    #: fewest shapes per image
    min_objects: int = 1
    #: most shapes per image (fewer when some cannot be placed)
    max_objects: int = 4
    #: shapes drawn: circle, square, triangle, star, diamond
    classes: list[str] = choice(SHAPE_CLASSES, default_factory=lambda: ["circle", "square", "triangle"])
    #: smallest shape diameter (circumscribed circle) as a fraction of image_size
    min_scale: float = 0.2
    #: largest shape diameter as a fraction of image_size
    max_scale: float = 0.45
    #: how diameters are drawn between min_scale and max_scale: uniform, or log (log-uniform: as many shapes
    #: in each octave, so small ones are common)
    scale_sampling: str = choice(("uniform", "log"), default="uniform")
    #: largest fraction of a shape that shapes drawn later (on top) may hide; its mask and box are the visible
    #: part. 0 = shapes never touch (2-pixel gap)
    max_occlusion: float = 0.0
    #: most distractors per image (lines, rings, dots, arcs in shape colours, drawn under the shapes; not objects)
    clutter: int = 0
    #: background: noise (flat tinted noise) or textured (adds a random gradient, stripes or blobs)
    background: str = choice(("noise", "textured"), default="noise")

    def validate(self) -> None:
        """Counts, sizes and ranges of the generator's parameters."""
        if self.num_train < 0 or self.num_val < 0:
            raise OptionError(
                "num_train", f"num_train and num_val must be >= 0, got {self.num_train} and {self.num_val}"
            )
        if self.image_size < 16:
            raise OptionError("image_size", f"{{key}} must be >= 16 pixels, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise OptionError(
                "min_objects", f"need 1 <= min_objects <= max_objects, got {self.min_objects} and {self.max_objects}"
            )
        classes = [str(c) for c in self.classes]
        if not classes or len(set(classes)) != len(classes) or set(classes) - set(SHAPE_CLASSES):
            raise OptionError("classes", f"{{key}} must be distinct names among {list(SHAPE_CLASSES)}, got {classes}")
        if not 0 < self.min_scale <= self.max_scale < 1:
            raise OptionError(
                "min_scale", f"need 0 < min_scale <= max_scale < 1, got {self.min_scale} and {self.max_scale}"
            )
        if self.max_scale * self.image_size < 4:
            raise OptionError("max_scale", f"{{key}} * image_size must be >= 4 pixels, got {self.max_scale}")
        if not 0 <= self.max_occlusion < 1:
            raise OptionError("max_occlusion", f"{{key}} must be in [0, 1), got {self.max_occlusion}")
        if self.clutter < 0:
            raise OptionError("clutter", f"{{key}} must be >= 0, got {self.clutter}")

    def changed(self) -> dict[str, object]:
        """The options of the harder setting (``min_scale`` onwards) that differ from their defaults."""
        default = ShapesOptions()
        names = ("min_scale", "max_scale", "scale_sampling", "max_occlusion", "clutter", "background")
        return {name: getattr(self, name) for name in names if getattr(self, name) != getattr(default, name)}
