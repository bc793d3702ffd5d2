"""The shapes generator's harder setting (occlusion, clutter, textures, small shapes, five classes) and its one
set of defaults (``ShapesOptions``) shared by the config section, the generator and ``tools/make_shapes.py``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sasa_det.data import load_coco_quietly, make_shapes_dataset
from sasa_det.data.shapes.generator import _polygon_mask, generate_shapes_image
from sasa_det.data.shapes.options import SHAPE_CLASSES, ShapesOptions
from tests.helpers import load_tool

REPO = Path(__file__).resolve().parents[1]
HARD = dict(
    classes=list(SHAPE_CLASSES),
    max_objects=8,
    min_scale=0.0625,
    max_scale=0.625,
    scale_sampling="log",
    max_occlusion=0.4,
    clutter=6,
    background="textured",
)

# sha256 of the decoded pixels and the annotation files of make_shapes_dataset(root, num_train=4, num_val=2,
# image_size=64, seed=3), computed with the generator as it was before ShapesOptions and the harder options
# existed: the defaults must keep drawing the very same demo dataset (pixels, not PNG bytes, so the hash does
# not depend on the zlib version).
DEFAULT_DATASET_SHA256 = "9a104f74d11f787fe55554d32e4ed01afed6e4b6d448fdb2adea040cd157f386"


def _dataset_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for split in ("train", "val"):
        for path in sorted((root / split).glob("*.png")):
            digest.update(path.name.encode())
            digest.update(np.asarray(Image.open(path)).tobytes())
        digest.update((root / "annotations" / f"instances_{split}.json").read_bytes())
    return digest.hexdigest()


def test_defaults_draw_the_same_dataset_as_before(tmp_path):
    make_shapes_dataset(tmp_path, num_train=4, num_val=2, image_size=64, seed=3)
    assert _dataset_hash(tmp_path) == DEFAULT_DATASET_SHA256
    meta = json.loads((tmp_path / "shapes_meta.json").read_text())
    assert not set(meta) & {"classes", "clutter", "max_occlusion", "background", "min_scale", "scale_sampling"}


def test_one_set_of_defaults():
    from sasa_det.engine.tasks.detection_options import DetectionDataOptions, ShapesConfig

    assert ShapesConfig is ShapesOptions
    assert DetectionDataOptions().shapes == ShapesOptions()
    args = load_tool("make_shapes").parse_args(["out"])
    for name, value in vars(ShapesOptions()).items():
        if name != "root":
            assert getattr(args, name) == value, name


def test_hard_setting_is_deterministic_by_seed(tmp_path):
    make_shapes_dataset(tmp_path / "a", num_train=3, num_val=1, seed=5, **HARD)
    make_shapes_dataset(tmp_path / "b", num_train=3, num_val=1, seed=5, **HARD)
    make_shapes_dataset(tmp_path / "c", num_train=3, num_val=1, seed=6, **HARD)
    a, b, c = (_dataset_hash(tmp_path / k) for k in "abc")
    assert a == b != c


def test_occluded_shapes_are_annotated_by_their_visible_pixels():
    options = ShapesOptions(image_size=96, **HARD)
    occluded = 0
    for index in range(12):
        image, objects = generate_shapes_image(np.random.default_rng(index), options)
        assert image.shape == (96, 96, 3)
        full = [_polygon_mask(obj["polygon"], 96) for obj in objects]
        for i, obj in enumerate(objects):
            on_top = np.zeros((96, 96), dtype=bool)
            for later in full[i + 1 :]:
                on_top |= later
            expected = full[i] & ~on_top  # the shape minus every shape drawn over it
            np.testing.assert_array_equal(obj.get("mask", full[i]), expected)
            assert expected.sum() >= (1 - options.max_occlusion) * full[i].sum() - 1e-9
            occluded += "mask" in obj
    assert occluded > 0, "the setting must produce occluded shapes"


def test_hard_annotations_match_the_pixels(tmp_path):
    size = 128
    paths = make_shapes_dataset(tmp_path, num_train=10, num_val=1, seed=2, **HARD)
    coco = load_coco_quietly(paths["train_ann"])
    assert [c["name"] for c in coco.loadCats(sorted(coco.cats))] == list(SHAPE_CLASSES)
    rle_count, small = 0, 0
    for image_id, info in coco.imgs.items():
        pixels = np.asarray(Image.open(Path(paths["train_images"]) / info["file_name"])).astype(np.float64)
        union = np.zeros((size, size), dtype=bool)
        for ann in coco.imgToAnns[image_id]:
            mask = coco.annToMask(ann).astype(bool)
            assert mask.sum() > 0
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= size and y + h <= size and w > 0 and h > 0
            assert not (mask & union).any(), "visible regions never overlap"
            union |= mask
            if isinstance(ann["segmentation"], dict):
                rle_count += 1
                assert ann["area"] == pytest.approx(mask.sum())
                ys, xs = np.nonzero(mask)
                assert [x, y, x + w, y + h] == pytest.approx([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            small += ann["area"] < 32**2 / 4
            # one colour plus noise: the mask holds the shape's own pixels, not its occluder's
            assert np.abs(pixels[mask] - np.median(pixels[mask], axis=0)).max(axis=1).mean() < 16
    assert rle_count > 0 and small > 0


def test_changed_option_regenerates(tmp_path):
    make_shapes_dataset(tmp_path, num_train=2, num_val=1, image_size=48)
    before = _dataset_hash(tmp_path)
    make_shapes_dataset(tmp_path, num_train=2, num_val=1, image_size=48, clutter=3)
    assert json.loads((tmp_path / "shapes_meta.json").read_text())["clutter"] == 3
    assert _dataset_hash(tmp_path) != before
    make_shapes_dataset(tmp_path, num_train=2, num_val=1, image_size=48)
    assert _dataset_hash(tmp_path) == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_occlusion=1.0), "max_occlusion"),
        (dict(clutter=-1), "clutter"),
        (dict(min_scale=0.5, max_scale=0.2), "min_scale"),
        (dict(classes=["hexagon"]), "classes"),
    ],
)
def test_bad_hard_options_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_shapes_dataset(tmp_path, num_train=1, num_val=1, **kwargs)


def test_hard_preset_config():
    from sasa_det.engine.experiment import load_config

    shapes = load_config(REPO / "configs" / "zoo" / "shapes_hard.yaml").data.shapes
    assert shapes.root == "data/shapes_hard" and len(shapes.classes) == 5 and shapes.max_objects == 6
    assert (shapes.num_train, shapes.num_val, shapes.image_size) == (600, 150, 128)
    assert shapes.max_occlusion > 0 and shapes.clutter > 0 and shapes.background == "textured"
