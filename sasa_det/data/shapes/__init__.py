"""The synthetic shapes dataset: its options (``options``, without torch or numpy), the generator
(``generator``: images and COCO annotations, generated on first use) and the scenery it paints under the shapes
(``scenery``: textures and distractors). Names import on first use."""

from sasa_det.lazy_names import lazy_names

_PROVIDED_BY = {
    "options": "SHAPE_CLASSES ShapesOptions",
    "generator": "SHAPE_KINDS SHAPE_NAMES generate_shapes_image make_shapes_dataset",
}
__all__, __getattr__, __dir__ = lazy_names(__name__, globals(), _PROVIDED_BY)
