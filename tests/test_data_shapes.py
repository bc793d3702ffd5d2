"""The synthetic shapes generator: determinism, COCO validity, geometry, regeneration rules."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sasa_det.data import load_coco_quietly, make_shapes_dataset

REPO = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(tmp_path):
    kwargs = dict(num_train=5, num_val=3, image_size=64)
    make_shapes_dataset(tmp_path / "a", seed=3, **kwargs)
    make_shapes_dataset(tmp_path / "b", seed=3, **kwargs)
    make_shapes_dataset(tmp_path / "c", seed=4, **kwargs)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 5 + 3 + 2 + 1  # images, two json files, meta
    assert a == b
    assert a["annotations/instances_train.json"] != c["annotations/instances_train.json"]
    assert a["train/000000.png"] != c["train/000000.png"]


def test_annotations_are_valid_coco_and_match_the_pixels(tmp_path):
    size = 96
    paths = make_shapes_dataset(
        tmp_path, num_train=12, num_val=4, image_size=size, seed=1, min_objects=2, max_objects=4
    )
    coco = load_coco_quietly(paths["train_ann"])
    assert [c["name"] for c in coco.loadCats(sorted(coco.cats))] == ["circle", "square", "triangle"]
    assert sorted(coco.cats) == [1, 2, 3]
    assert len(coco.imgs) == 12
    for image_id, info in coco.imgs.items():
        anns = coco.imgToAnns[image_id]
        assert 1 <= len(anns) <= 4
        pixels = np.asarray(Image.open(Path(paths["train_images"]) / info["file_name"])).astype(np.float64)
        assert pixels.shape == (size, size, 3) and (info["height"], info["width"]) == (size, size)
        union = np.zeros((size, size), dtype=bool)
        for ann in anns:
            assert ann["iscrowd"] == 0 and ann["category_id"] in (1, 2, 3)
            (polygon,) = ann["segmentation"]
            xy = np.asarray(polygon).reshape(-1, 2)
            assert len(xy) in (3, 4, 24)
            assert xy.min() >= 0 and xy.max() <= size
            x, y, w, h = ann["bbox"]
            np.testing.assert_allclose([x, y, x + w, y + h], [*xy.min(0), *xy.max(0)], atol=0.011)
            mask = coco.annToMask(ann).astype(bool)
            assert abs(mask.sum() - ann["area"]) <= 0.2 * ann["area"] + 10
            assert not (mask & union).any(), "shapes must not overlap"
            union |= mask
            inside = pixels[mask].mean()
            ring = np.zeros_like(mask)
            ring[max(0, int(y) - 4) : int(y + h) + 5, max(0, int(x) - 4) : int(x + w) + 5] = True
            outside = pixels[ring & ~mask & ~union].mean() if (ring & ~mask & ~union).any() else 0.0
            assert inside > outside + 40, "the shape must stand out from the background"


def test_gapped_category_ids(tmp_path):
    paths = make_shapes_dataset(tmp_path, num_train=3, num_val=2, image_size=48, category_ids=(2, 7, 13))
    coco = load_coco_quietly(paths["val_ann"])
    assert sorted(coco.cats) == [2, 7, 13]
    assert {a["category_id"] for a in coco.anns.values()} <= {2, 7, 13}


def test_existing_dataset_is_reused_and_changed_parameters_regenerate(tmp_path):
    paths = make_shapes_dataset(tmp_path, num_train=3, num_val=2, image_size=48)
    probe = Path(paths["train_images"]) / "000000.png"
    before = probe.stat().st_mtime_ns
    assert make_shapes_dataset(tmp_path, num_train=3, num_val=2, image_size=48) == paths
    assert probe.stat().st_mtime_ns == before
    make_shapes_dataset(tmp_path, num_train=2, num_val=2, image_size=48)
    assert not (Path(paths["train_images"]) / "000002.png").exists()
    assert json.loads((tmp_path / "shapes_meta.json").read_text())["num_train"] == 2


def test_missing_image_triggers_regeneration(tmp_path):
    paths = make_shapes_dataset(tmp_path, num_train=2, num_val=1, image_size=48)
    (Path(paths["val_images"]) / "000000.png").unlink()
    make_shapes_dataset(tmp_path, num_train=2, num_val=1, image_size=48)
    assert (Path(paths["val_images"]) / "000000.png").is_file()


def test_interrupted_generation_is_redone(tmp_path):
    paths = make_shapes_dataset(tmp_path, num_train=2, num_val=1, image_size=48)
    meta_path = tmp_path / "shapes_meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "complete": False}))  # as left by a killed run
    (Path(paths["train_images"]) / "000007.png").write_bytes(b"partial")
    make_shapes_dataset(tmp_path, num_train=2, num_val=1, image_size=48)
    assert json.loads(meta_path.read_text())["complete"] is True
    assert not (Path(paths["train_images"]) / "000007.png").exists()


def test_concurrent_calls_generate_once(tmp_path):
    import threading

    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(make_shapes_dataset(tmp_path, num_train=4, num_val=2, image_size=48))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(map(str, results))) == 1
    assert len(list(Path(results[0]["train_images"]).glob("*.png"))) == 4


def test_refuses_to_overwrite_foreign_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "mine.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not written by the shapes generator"):
        make_shapes_dataset(tmp_path, num_train=1, num_val=1, image_size=48)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(min_objects=0), "min_objects"),
        (dict(min_objects=3, max_objects=2), "min_objects"),
        (dict(category_ids=(1, 1, 2)), "category_ids"),
        (dict(image_size=8), "image_size"),
        (dict(num_train=-1), "num_train"),
    ],
)
def test_bad_parameters_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_shapes_dataset(tmp_path, **{"num_train": 1, "num_val": 1, **kwargs})


def test_command_line_tool(tmp_path, capsys):
    module = runpy.run_path(str(REPO / "tools" / "make_shapes.py"))
    paths = module["main"](
        [str(tmp_path), "--num-train", "2", "--num-val", "1", "--image-size", "48", "--category-ids", "1", "4", "9"]
    )
    assert sorted(load_coco_quietly(paths["train_ann"]).cats) == [1, 4, 9]
    assert "val_ann" in capsys.readouterr().out
