"""The held-out letters set of the fine-tuning benchmark: deterministic, valid VOC that the project's converter
takes, boxes around the drawn letters; the table of the runs."""

import hashlib
import json

from sasa_det.analysis.finetune_benchmark import _coco_splits, finetune_table, make_letters_voc


def _digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def test_the_letters_set_is_deterministic_and_converts(tmp_path):
    first = make_letters_voc(tmp_path / "a", num_train=4, num_val=2, seed=3)
    second = make_letters_voc(tmp_path / "b", num_train=4, num_val=2, seed=3)
    assert _digest(first) == _digest(second)
    paths = _coco_splits(first, tmp_path / "coco")
    train = json.loads(open(paths["data.train_ann"]).read())
    val = json.loads(open(paths["data.val_ann"]).read())
    assert (len(train["images"]), len(val["images"])) == (4, 2)
    assert [c["name"] for c in train["categories"]] == ["A", "B"]
    assert all(1 <= sum(a["image_id"] == i["id"] for a in train["annotations"]) <= 4 for i in train["images"])


def test_a_letters_box_holds_the_stroked_letter(tmp_path):
    """Inside each box some pixels differ strongly from the box's median (the letter and its contrasting
    stroke); a box is at least 10 px on each side."""
    import numpy as np
    from PIL import Image

    root = make_letters_voc(tmp_path / "v", num_train=3, num_val=1, seed=5)
    paths = _coco_splits(root, tmp_path / "coco")
    coco = json.loads(open(paths["data.train_ann"]).read())
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    for ann in coco["annotations"]:
        x, y, w, h = (int(round(v)) for v in ann["bbox"])
        assert w >= 10 and h >= 10
        pixels = np.asarray(Image.open(root / "JPEGImages" / files[ann["image_id"]]).convert("L"), dtype=float)
        inside = pixels[y : y + h, x : x + w]
        assert np.abs(inside - np.median(inside)).max() > 50


def test_the_table_has_a_row_per_start():
    rows = [
        {"start": "scratch", "steps": 600, "mAP": 0.2121, "AP50": 0.45, "seconds": 900},
        {"start": "demo", "steps": 600, "mAP": 0.4834, "AP50": 0.778, "seconds": 910},
    ]
    lines = finetune_table(rows).splitlines()
    assert lines[2] == "| scratch | 600 | 0.212 | 0.450 | 900 |"
    assert lines[3] == "| demo | 600 | 0.483 | 0.778 | 910 |"
