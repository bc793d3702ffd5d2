"""VOC and YOLO converters against known boxes, the seeded split, and a converted dataset that trains."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sasa_det.data import (
    CocoDetectionDataset,
    DatasetChecks,
    DatasetError,
    convert_voc,
    convert_yolo,
    load_checked_coco,
    split_coco,
)

REPO = Path(__file__).parents[1]
H, W = 40, 60


def _voc_xml(filename, objects, size=(H, W)):
    parts = [
        f"<annotation><filename>{filename}</filename><size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>"
    ]
    for name, (x1, y1, x2, y2), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult>"
            f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def _voc_folder(root: Path, count: int = 4) -> Path:
    """``count`` images, each with a bright box drawn where its (1-based inclusive) VOC box says."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        x1, y1 = int(rng.integers(1, 20)), int(rng.integers(1, 15))
        x2, y2 = x1 + int(rng.integers(10, 30)), y1 + int(rng.integers(10, 20))
        pixels = np.full((H, W, 3), 30, np.uint8)
        pixels[y1 - 1 : y2, x1 - 1 : x2] = (240, 200, 60) if i % 2 else (60, 200, 240)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"img{i}.png")
        objects = [("dog" if i % 2 else "cat", (x1, y1, x2, y2), 0)]
        if i == 0:
            objects.append(("cat", (1, 1, W, H), 1))  # difficult, whole image
        (root / "Annotations" / f"img{i}.xml").write_text(_voc_xml(f"img{i}.png", objects))
    return root


def test_voc_boxes_classes_difficult_and_split_file(tmp_path):
    root = _voc_folder(tmp_path / "voc")
    summary = convert_voc(root / "Annotations", root / "JPEGImages", tmp_path / "all.json")
    data = json.loads((tmp_path / "all.json").read_text())
    assert summary["classes"] == ["cat", "dog"] and summary["difficult"] == 1
    assert [c["name"] for c in data["categories"]] == ["cat", "dog"]
    whole = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(whole) == 1 and whole[0]["bbox"] == [0, 0, W, H]  # 1-based inclusive (1..W) -> [0, W)
    for image in data["images"]:
        assert image["height"] == H and image["width"] == W and image["file_name"].endswith(".png")
        pixels = np.asarray(Image.open(root / "JPEGImages" / image["file_name"]))
        ann = next(a for a in data["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"])
        x, y, w, h = (int(v) for v in ann["bbox"])
        inside = pixels[y : y + h, x : x + w]
        assert (inside != 30).all() and (pixels != 30).any(axis=2).sum() == w * h  # the box is exactly the painted area
    listed = tmp_path / "val.txt"
    listed.write_text("img1\nimg3\n")
    convert_voc(
        root / "Annotations", root / "JPEGImages", tmp_path / "val.json", classes=["dog", "cat"], split_file=listed
    )
    val = json.loads((tmp_path / "val.json").read_text())
    assert [i["file_name"] for i in val["images"]] == ["img1.png", "img3.png"]
    assert {a["category_id"] for a in val["annotations"]} == {1}  # dog is 1 in the given order


def test_voc_problems_are_all_listed_and_nothing_is_written(tmp_path):
    root = _voc_folder(tmp_path / "voc")
    (root / "Annotations" / "img1.xml").write_text("<annotation><filename>img1.png</filename>")
    (root / "Annotations" / "img2.xml").write_text(_voc_xml("missing.png", [("cat", (1, 1, 5, 5), 0)]))
    (root / "JPEGImages" / "img2.png").unlink()  # nor is there an image named like the XML
    (root / "Annotations" / "img3.xml").write_text(
        _voc_xml("img3.png", [("horse", (1, 1, 5, 5), 0), ("cat", (9, 1, 5, 5), 0)])
    )
    with pytest.raises(DatasetError) as info:
        convert_voc(root / "Annotations", root / "JPEGImages", tmp_path / "out.json", classes=["cat", "dog"])
    message = str(info.value)
    for fragment in (
        "img1.xml",
        "not readable XML",
        "img2.xml",
        "missing.png",
        "img3.xml: object 0 (horse)",
        "'horse'",
        "img3.xml: object 1 (cat)",
        "xmax < xmin",
        "nothing was written",
    ):
        assert fragment in message, fragment
    assert not (tmp_path / "out.json").exists()


def _yolo_folder(root: Path) -> Path:
    (root / "images" / "sub").mkdir(parents=True)
    (root / "labels" / "sub").mkdir(parents=True)
    for name in ("a", "sub/b", "c"):
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / f"{name}.jpg")
    (root / "classes.txt").write_text("person\ncar\n\n")
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.25\n1 0.25 0.75 0.1 0.2\n")
    (root / "labels" / "sub" / "b.txt").write_text("1 0.1 0.1 0.5 0.1 0.5 0.6\n")  # triangle polygon
    return root  # c.jpg has no label file: a background image


def test_yolo_boxes_polygons_and_background_images(tmp_path):
    root = _yolo_folder(tmp_path / "yolo")
    summary = convert_yolo(root / "labels", root / "images", root / "classes.txt", tmp_path / "out.json")
    assert (
        summary["images_without_labels"] == 1 and summary["polygons"] == 1 and summary["classes"] == ["person", "car"]
    )
    data = json.loads((tmp_path / "out.json").read_text())
    files = {i["id"]: i["file_name"] for i in data["images"]}
    assert sorted(files.values()) == ["a.jpg", "c.jpg", "sub/b.jpg"]
    by_file = {}
    for a in data["annotations"]:
        by_file.setdefault(files[a["image_id"]], []).append(a)
    boxes = [(a["category_id"], a["bbox"]) for a in by_file["a.jpg"]]
    assert boxes == [(1, [15.0, 15.0, 30.0, 10.0]), (2, [12.0, 26.0, 6.0, 8.0])]
    (polygon,) = by_file["sub/b.jpg"]
    assert polygon["category_id"] == 2 and polygon["bbox"] == [6.0, 4.0, 24.0, 20.0]
    assert polygon["segmentation"] == [[6.0, 4.0, 30.0, 4.0, 30.0, 24.0]] and math.isclose(polygon["area"], 240.0)
    # box-only lines have no mask: Mask R-CNN training names them, or drops them on request
    records, report = load_checked_coco(
        tmp_path / "out.json", root / "images", DatasetChecks(on_bad_records="drop"), with_masks=True
    )
    ds = CocoDetectionDataset(records)
    assert {p.record for p in report.dropped} == {
        f"annotation id {a['id']} (image id {a['image_id']})" for a in by_file["a.jpg"]
    }
    _, target = ds[ds.image_ids.index(polygon["image_id"])]
    assert target["masks"].shape == (1, H, W) and 200 < target["masks"].sum() < 280


def test_yolo_problems_are_all_listed(tmp_path):
    root = _yolo_folder(tmp_path / "yolo")
    (root / "labels" / "c.txt").write_text("2 0.5 0.5 0.1 0.1\n0 30 20 10 10\n0 0.5 0.5 0 0.1\n0 0.5 0.5\n")
    (root / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError) as info:
        convert_yolo(root / "labels", root / "images", root / "classes.txt", tmp_path / "out.json")
    message = str(info.value)
    for fragment in (
        "orphan.txt",
        "labels no image",
        "c.txt: line 1: has class 2, outside 0..1",
        "c.txt: line 2",
        "not pixels",
        "c.txt: line 3: has a box with non-positive",
        "c.txt: line 4: has 3 values",
    ):
        assert fragment in message, fragment


def test_split_is_seeded_and_complete(tmp_path):
    root = _voc_folder(tmp_path / "voc", count=10)
    convert_voc(root / "Annotations", root / "JPEGImages", tmp_path / "all.json")
    a = split_coco(tmp_path / "all.json", 0.2, 0, tmp_path / "a")
    b = split_coco(tmp_path / "all.json", 0.2, 0, tmp_path / "b")
    c = split_coco(tmp_path / "all.json", 0.2, 1, tmp_path / "c")
    assert a["val_images"] == 2 and a["train_images"] == 8
    val_ids = lambda r: sorted(i["id"] for i in json.loads(Path(r["val_ann"]).read_text())["images"])  # noqa: E731
    assert val_ids(a) == val_ids(b) and val_ids(a) != val_ids(c)
    train, val = (json.loads(Path(a[k]).read_text()) for k in ("train_ann", "val_ann"))
    assert len(train["annotations"]) + len(val["annotations"]) == 11 and train["categories"] == val["categories"]
    assert {x["image_id"] for x in val["annotations"]} <= set(val_ids(a))
    with pytest.raises(DatasetError, match="val-fraction"):
        split_coco(tmp_path / "all.json", 1.0, 0, tmp_path / "d")


def test_voc_folder_to_a_trained_model_in_three_commands(tmp_path, capsys):
    """convert, split, train: the three commands of docs/custom_data.md, on a 10-image VOC folder, a few steps."""
    root = _voc_folder(tmp_path / "voc", count=10)
    convert = runpy.run_path(str(REPO / "tools" / "convert_dataset.py"))["main"]
    assert (
        convert(
            [
                "voc",
                "--annotations",
                str(root / "Annotations"),
                "--images",
                str(root / "JPEGImages"),
                "--out",
                str(tmp_path / "all.json"),
            ]
        )
        == 0
    )
    assert (
        convert(
            [
                "split",
                "--ann",
                str(tmp_path / "all.json"),
                "--val-fraction",
                "0.3",
                "--seed",
                "0",
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert '"difficult": 1' in capsys.readouterr().out
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.runner import train

    images = root / "JPEGImages"
    cfg = load_config(
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            f"data.train_images={images}",
            f"data.train_ann={tmp_path / 'train.json'}",
            f"data.val_images={images}",
            f"data.val_ann={tmp_path / 'val.json'}",
            "data.min_sizes=[64]",
            "data.max_size=96",
            "data.batch_size=2",
            "data.val_batch_size=2",
            "data.num_workers=0",
            "model.backbone={name: resnet26, base_width: 8}",
            "model.fpn_channels=32",
            "model.min_size=64",
            "model.max_size=96",
            "trainer.max_steps=2",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "trainer.enable_progress_bar=false",
            "eval.save_visualization=0",
        ],
    )
    result = train(cfg)
    assert result["last_checkpoint"] and math.isfinite(result["metrics"]["val/mAP"])
    assert result["metrics"]["val/num_images"] == 3
    assert "Dataset train" in capsys.readouterr().out


def test_shapes_written_as_voc_convert_back_to_the_same_boxes_and_classes(tmp_path):
    from sasa_det.data import convert_voc, export_voc
    from sasa_det.data.shapes import make_shapes_dataset

    paths = make_shapes_dataset(tmp_path / "shapes", num_train=6, num_val=3, image_size=64, seed=3)
    voc = export_voc(
        [paths["train_ann"], paths["val_ann"]],
        [paths["train_images"], paths["val_images"]],
        tmp_path / "voc",
        prefixes=["train", "val"],
    )
    assert voc["images"] == 9
    convert_voc(tmp_path / "voc" / "Annotations", tmp_path / "voc" / "JPEGImages", tmp_path / "back.json")
    back = json.loads((tmp_path / "back.json").read_text())
    names = {c["id"]: c["name"] for c in back["categories"]}
    converted = {}
    for image in back["images"]:
        anns = [a for a in back["annotations"] if a["image_id"] == image["id"]]
        converted[image["file_name"]] = sorted((names[a["category_id"]], *a["bbox"]) for a in anns)
    for split in ("train", "val"):
        original = json.loads(Path(paths[f"{split}_ann"]).read_text())
        original_names = {c["id"]: c["name"] for c in original["categories"]}
        for image in original["images"]:
            anns = [a for a in original["annotations"] if a["image_id"] == image["id"]]
            expected = sorted((original_names[a["category_id"]], *a["bbox"]) for a in anns)
            got = converted[f"{split}_{image['file_name']}"]
            assert [e[0] for e in expected] == [g[0] for g in got]
            assert all(abs(a - b) <= 1.0 for e, g in zip(expected, got) for a, b in zip(e[1:], g[1:]))
    with pytest.raises(ValueError, match="occurs twice"):
        export_voc([paths["train_ann"]] * 2, [paths["train_images"]] * 2, tmp_path / "twice")
