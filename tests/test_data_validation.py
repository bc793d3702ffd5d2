"""Every kind of bad input, on corrupted copies of a tiny dataset: each either stops before training
with an error that names the file, the record and the fix (and, where a record can be dropped,
``on_bad_records="drop"`` drops exactly it), or is fixed, counted in the report, and the data that
reaches the model is inspected."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sasa_det.data import (
    CocoDataModule,
    CocoDataOptions,
    CocoDetectionDataset,
    DatasetChecks,
    DatasetError,
    check_num_classes,
    load_checked_coco,
)
from tests.data_corruptions import H, W, base_dataset, jpeg_bytes, pixels, write_dataset


def _ann(data, ann_id):
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def _set(path, value):
    """A mutation of the json: ``path`` like ("annotations", 0, "bbox")."""

    def mutate(data, image_dir):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _file(name, content):
    """A mutation of an image file: replace ``name`` with bytes, or a function of its old bytes."""

    def mutate(data, image_dir):
        old = (image_dir / name).read_bytes()
        (image_dir / name).write_bytes(content(old) if callable(content) else content)

    return mutate


def _corrupt_png_data(old: bytes) -> bytes:
    """Cut the pixel data short but keep the end chunk: the end marker is there, only decoding notices."""
    return old[: old.index(b"IDAT") + 100] + old[-12:]


def _rle(counts):
    return _set(("annotations", 0, "segmentation"), {"size": [H, W], "counts": counts})


# id, mutation, image check level, fragments of the error, records dropped under on_bad_records="drop"
# (None: no drop can fix it, the error stays).
ERRORS = [
    (
        "not-an-object",
        lambda d, _: d.clear() or d.update({"x": 1}),
        "header",
        ["missing or non-list key 'images'"],
        None,
    ),
    ("duplicate-category", _set(("categories", 1, "id"), 1), "header", ["category id 1", "appears twice"], None),
    ("no-annotations", _set(("annotations",), []), "header", ["'annotations' is empty"], None),
    (
        "image-id-not-int",
        _set(("images", 0, "id"), "one"),
        "header",
        ["images[0]", "integer 'id'"],
        {"images[0]", "annotation id 1 (image id 1)"},
    ),
    (
        "duplicate-image-id",
        _set(("images", 1, "id"), 1),
        "header",
        ["image id 1", "appears twice", "give each image its own id"],
        {"image id 1", "annotation id 2 (image id 2)"},
    ),
    (
        "missing-height",
        _set(("images", 2, "height"), None),
        "header",
        ["image id 3", "height=None", "set height"],
        {"image id 3"},
    ),
    (
        "duplicate-annotation-id",
        _set(("annotations", 1, "id"), 1),
        "header",
        ["annotation id 1", "appears twice", "renumber"],
        {"annotation id 1"},
    ),
    (
        "unknown-image",
        _set(("annotations", 1, "image_id"), 9),
        "header",
        ["annotation id 2 (image id 9)", "not in 'images'"],
        {"annotation id 2 (image id 9)"},
    ),
    (
        "unknown-category",
        _set(("annotations", 1, "category_id"), 7),
        "header",
        ["annotation id 2", "category_id 7", "add the category"],
        {"annotation id 2 (image id 2)"},
    ),
    (
        "bbox-nan",
        _set(("annotations", 0, "bbox"), [1, 2, float("nan"), 3]),
        "header",
        ["annotation id 1", "malformed bbox", "[x, y, width, height]"],
        {"annotation id 1 (image id 1)"},
    ),
    (
        "bbox-length",
        _set(("annotations", 0, "bbox"), [1, 2, 3]),
        "header",
        ["annotation id 1", "malformed bbox"],
        {"annotation id 1 (image id 1)"},
    ),
    (
        "bbox-string",
        _set(("annotations", 0, "bbox"), [1, "2", 3, 4]),
        "header",
        ["annotation id 1", "malformed bbox"],
        {"annotation id 1 (image id 1)"},
    ),
    (
        "bbox-zero-width",
        _set(("annotations", 0, "bbox"), [1, 2, 0, 4]),
        "header",
        ["annotation id 1", "non-positive size"],
        {"annotation id 1 (image id 1)"},
    ),
    (
        "bbox-outside",
        _set(("annotations", 2, "bbox"), [40, 5, 10, 10]),
        "header",
        ["annotation id 3", "entirely outside", "32x24"],
        {"annotation id 3 (image id 3)"},
    ),
    (
        "iscrowd-2",
        _set(("annotations", 0, "iscrowd"), 2),
        "header",
        ["annotation id 1", "iscrowd must be 0 or 1"],
        {"annotation id 1 (image id 1)"},
    ),
    (
        "polygon-2-points",
        _set(("annotations", 0, "segmentation"), [[2, 2, 12, 10]]),
        "header",
        ["annotation id 1", "cannot make a mask", "3 points"],
        {"annotation id 1 (image id 1)"},
    ),
    (
        "polygon-nan",
        _set(("annotations", 0, "segmentation"), [[2, 2, 12, 2, float("nan"), 10]]),
        "header",
        ["annotation id 1", "finite numbers"],
        {"annotation id 1 (image id 1)"},
    ),
    (
        "no-segmentation",
        lambda d, _: d["annotations"][0].pop("segmentation"),
        "header",
        ["annotation id 1", "no 'segmentation'", "with_masks=False"],
        {"annotation id 1 (image id 1)"},
    ),
    (
        "rle-wrong-size",
        _set(("annotations", 0, "segmentation"), {"size": [H + 1, W], "counts": [H * W + W]}),
        "header",
        ["annotation id 1", "RLE of size [25, 32]"],
        {"annotation id 1 (image id 1)"},
    ),
    (
        "rle-short-runs",
        _rle([10, 20]),
        "header",
        ["annotation id 1", "do not cover the 24x32 image"],
        {"annotation id 1 (image id 1)"},
    ),
    (
        "rle-bad-string",
        _rle("ab~~"),
        "header",
        ["annotation id 1", "cannot be decoded"],
        {"annotation id 1 (image id 1)"},
    ),
    (
        "image-missing",
        lambda d, image_dir: (image_dir / "2.png").unlink(),
        "header",
        ["2.png", "image id 2", "does not exist", "check the image folder"],
        {"image id 2"},
    ),
    (
        "image-not-an-image",
        _file("2.png", b"this is text"),
        "header",
        ["2.png", "image id 2", "cannot be read as an image"],
        {"image id 2"},
    ),
    (
        "image-truncated-png",
        _file("2.png", lambda old: old[: len(old) // 2]),
        "header",
        ["2.png", "image id 2", "truncated"],
        {"image id 2"},
    ),
    (
        "image-truncated-jpeg",
        lambda d, image_dir: (
            _set(("images", 1, "file_name"), "2.jpg")(d, image_dir),
            (image_dir / "2.jpg").write_bytes(jpeg_bytes(pixels(2))[:-300]),
        ),
        "header",
        ["2.jpg", "image id 2", "truncated"],
        {"image id 2"},
    ),
    (
        "image-corrupt-data",
        _file("2.png", _corrupt_png_data),
        "full",
        ["2.png", "image id 2", "cannot be read"],
        {"image id 2"},
    ),
    (
        "image-size-mismatch",
        lambda d, image_dir: Image.fromarray(pixels(2, H + 1, W)).save(image_dir / "2.png"),
        "header",
        ["2.png", "image id 2", "25x32 (HxW)", "says 24x32", "set height/width"],
        {"image id 2"},
    ),
    (
        "exif-rotated-after-annotation",
        lambda d, image_dir: (
            _set(("images", 1, "file_name"), "2.jpg")(d, image_dir),
            (image_dir / "2.jpg").write_bytes(jpeg_bytes(pixels(2), orientation=6)),
        ),
        "header",
        ["2.jpg", "image id 2", "32x24 (HxW)", "before EXIF orientation 6", "exiftool"],
        {"image id 2"},
    ),
]


def _corrupted(tmp_path, mutate):
    ann_file, image_dir = write_dataset(tmp_path)
    data = base_dataset()
    mutate(data, image_dir)
    ann_file.write_text(json.dumps(data))
    return ann_file, image_dir


def _build(ann_file, image_dir, check_images="header", on_bad_records="error", cache_dir=None, **kwargs):
    """``(dataset, report)`` of a split with masks, loaded as the data module loads one."""
    checks = DatasetChecks(check_images, on_bad_records, check_cache=cache_dir is not None, check_cache_dir=cache_dir)
    records, report = load_checked_coco(ann_file, image_dir, checks, with_masks=True, **kwargs)
    return CocoDetectionDataset(records), report


@pytest.mark.parametrize("case, mutate, level, fragments, dropped", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_stops_before_training_and_names_file_record_and_fix(
    tmp_path, case, mutate, level, fragments, dropped
):
    ann_file, image_dir = _corrupted(tmp_path, mutate)
    with pytest.raises(DatasetError) as info:
        _build(ann_file, image_dir, check_images=level)
    message = str(info.value)
    assert "ann.json" in message and "fix:" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    if dropped is None:
        with pytest.raises(DatasetError):
            _build(ann_file, image_dir, check_images=level, on_bad_records="drop")
        return
    ds, report = _build(ann_file, image_dir, check_images=level, on_bad_records="drop")
    assert {p.record for p in report.dropped} == dropped
    # whatever survives is loadable, and nothing of a dropped record reaches the model
    assert len(ds.coco.dataset["annotations"]) < 3
    for index in range(len(ds)):
        image, target = ds[index]
        assert image.shape == (3, H, W) and len(target["boxes"]) == len(target["masks"])
    assert "dropped" in report.format()


def test_corrupt_pixel_data_passes_the_header_check_and_is_named_when_loaded(tmp_path):
    ann_file, image_dir = _corrupted(tmp_path, _file("2.png", _corrupt_png_data))
    ds, report = _build(ann_file, image_dir, check_images="header")
    with pytest.raises(DatasetError, match=r"2\.png.*image id 2 of .*ann\.json"):
        ds[1]


def test_invalid_json_names_the_file(tmp_path):
    ann_file, image_dir = write_dataset(tmp_path)
    ann_file.write_text('{"images": [')
    with pytest.raises(DatasetError, match="ann.json.*not valid JSON"):
        _build(ann_file, image_dir)


def test_every_problem_is_listed_at_once_and_a_long_list_goes_to_a_file(tmp_path):
    data = base_dataset()
    for k in range(30):
        data["annotations"].append({**data["annotations"][0], "id": 100 + k, "bbox": [1, 1, -1, 1]})
    data["annotations"][1]["category_id"] = 9
    ann_file, image_dir = write_dataset(tmp_path, data)
    (image_dir / "3.png").unlink()
    with pytest.raises(DatasetError) as info:
        _build(ann_file, image_dir, report_dir=tmp_path / "run")
    err = info.value
    assert len(err.problems) == 32 and "... and 12 more" in str(err) and str(err.full_list) in str(err)
    lines = err.full_list.read_text().splitlines()
    assert (
        len(lines) == 32 and any("3.png" in line for line in lines) and any("category_id 9" in line for line in lines)
    )


# ------------------------------------------------------------------------------------------------ fixes
def test_safe_fixes_are_applied_counted_and_reach_the_model_fixed(tmp_path):
    data = base_dataset()
    _ann(data, 1)["bbox"] = [-3, 2, 13, 8]  # partly outside: clipped to [0, 2, 10, 10]
    _ann(data, 2)["segmentation"].append([1, 1, 3, 3])  # a 2-point part next to a valid one
    del _ann(data, 3)["area"]
    data["annotations"] += [
        {
            "id": 4,
            "image_id": 3,
            "category_id": 1,
            "bbox": [1, 1, 0.5, 5],
            "area": 2.5,
            "iscrowd": 0,
            "segmentation": [[1, 1, 1.5, 1, 1.5, 6]],
        },
        {
            "id": 5,
            "image_id": 3,
            "category_id": 2,
            "bbox": [0, 0, 20, 20],
            "area": 400,
            "iscrowd": 1,
            "segmentation": {"size": [H, W], "counts": [H * W]},
        },
    ]
    data["images"].append({"id": 4, "file_name": "1.png", "height": H, "width": W})  # no annotation...
    data["images"][-1]["file_name"] = "4.png"
    ann_file, image_dir = write_dataset(tmp_path, data)
    Image.fromarray(pixels(4)).save(image_dir / "4.png")
    ds, report = _build(ann_file, image_dir, keep_empty=False)
    fixes = report.fixes
    assert fixes["box clipped to the image"] == [1]
    assert fixes["polygon parts with fewer than 3 points removed"] == [2]
    assert fixes["missing area filled in from the box"] == [3]
    assert fixes["box smaller than min_box_size=1 px (after clipping) removed"] == [4]
    assert fixes["crowd annotation ignored in training (a region, not an instance)"] == [5]
    assert fixes["image without annotations dropped (keep_empty=False)"] == [4]
    assert ds.coco.anns[3]["area"] == 120.0 and ds.image_ids == [1, 2, 3]
    _, target = ds[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 2.0, 10.0, 10.0]]))
    _, target = ds[1]
    assert target["masks"].shape == (1, H, W) and target["masks"][0, 4:12, 4:12].all() and target["masks"].sum() == 64
    _, target = ds[2]
    assert target["labels"].tolist() == [3]  # the tiny box and the crowd region are not targets
    text = report.format()
    assert "fixed: 1 x box clipped to the image (1)" in text and "crowd annotation" in text


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("L", lambda rgb: np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None], 3, 2)),
        ("RGBA", lambda rgb: rgb),  # alpha dropped, colour kept
        ("LA", lambda rgb: np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None], 3, 2)),
        ("P", lambda rgb: np.asarray(Image.fromarray(rgb).convert("P").convert("RGB"))),
    ],
)
def test_image_modes_are_converted_and_counted(tmp_path, mode, expected):
    ann_file, image_dir = write_dataset(tmp_path)
    rgb = pixels(1)
    stored = Image.fromarray(rgb).convert(mode)
    if mode == "RGBA":
        stored.putalpha(0)  # fully transparent: the colour must survive
    stored.save(image_dir / "1.png")
    ds, report = _build(ann_file, image_dir)
    assert report.fixes[f"image mode {mode} -> RGB ({'alpha dropped' if 'A' in mode else 'converted'})"] == [1]
    image, _ = ds[0]
    np.testing.assert_array_equal((image * 255).round().byte().permute(1, 2, 0).numpy(), expected(rgb))


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    ann_file, image_dir = write_dataset(tmp_path)
    values = np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16)
    Image.fromarray(values).save(image_dir / "1.png")
    assert Image.open(image_dir / "1.png").convert("RGB").getextrema()[0][1] == 255  # what a plain convert does: clip
    ds, report = _build(ann_file, image_dir)
    image, _ = ds[0]
    assert [k for k in report.fixes if "16 bits" in k]
    got = (image[0] * 255).round().numpy()
    np.testing.assert_allclose(got, np.round(values / 257.0), atol=0)
    assert 0 < (got == 255).mean() < 0.01  # only the brightest pixel is white


def test_cmyk_jpeg_is_converted(tmp_path):
    ann_file, image_dir = write_dataset(tmp_path)
    data = base_dataset()
    data["images"][0]["file_name"] = "1.jpg"
    ann_file.write_text(json.dumps(data))
    flat = np.zeros((H, W, 3), np.uint8)
    flat[:] = (200, 40, 40)
    (image_dir / "1.jpg").write_bytes(jpeg_bytes(flat, mode="CMYK"))
    ds, report = _build(ann_file, image_dir)
    assert report.fixes["image mode CMYK -> RGB (converted)"] == [1]
    image, _ = ds[0]
    mean = (image * 255).mean(dim=(1, 2))
    torch.testing.assert_close(mean, torch.tensor([200.0, 40.0, 40.0]), atol=8, rtol=0)


def test_exif_orientation_is_applied_the_way_the_annotations_expect(tmp_path):
    ann_file, image_dir = write_dataset(tmp_path)
    data = base_dataset()
    data["images"][0].update(file_name="1.jpg", height=W, width=H)  # annotated as displayed: 32 high, 24 wide
    data["annotations"][0]["bbox"] = [2, 2, 10, 20]
    data["annotations"][0]["segmentation"] = [[2, 2, 12, 2, 12, 22, 2, 22]]
    ann_file.write_text(json.dumps(data))
    stored = np.zeros((H, W, 3), np.uint8)
    stored[:8, :8] = 255  # a white block at the stored top-left
    (image_dir / "1.jpg").write_bytes(jpeg_bytes(stored, orientation=6))
    ds, report = _build(ann_file, image_dir)
    assert report.fixes["image EXIF orientation 6 applied"] == [1]
    image, target = ds[0]
    assert image.shape == (3, W, H) and target["masks"].shape == (1, W, H)
    # orientation 6 = displayed after a 90-degree clockwise turn: the stored top-left is the top-right
    assert image[:, :8, -8:].mean() > 0.9 and image[:, :8, :8].mean() < 0.1


def test_num_classes_disagreeing_in_either_direction(tmp_path):
    ann_file, image_dir = write_dataset(tmp_path)
    names = _build(ann_file, image_dir)[0].class_names
    check_num_classes(3, names, ann_file)
    check_num_classes(None, names, ann_file)
    with pytest.raises(
        DatasetError,
        match=r"ann.json.*model.num_classes=2 but the dataset has 3 categories \(cat, dog, bird\).*set model.num_classes=3",
    ):
        check_num_classes(2, names, ann_file)
    with pytest.raises(
        DatasetError, match=r"model.num_classes=5 but the dataset has only 3.*2 output\(s\) would be trained on no data"
    ):
        check_num_classes(5, names, ann_file)


# ------------------------------------------------------------------------------------------------ data module
def _datamodule(ann_file, image_dir, tmp_path, **kwargs):
    options = CocoDataOptions(
        train_images=image_dir,
        train_ann=ann_file,
        val_images=image_dir,
        val_ann=ann_file,
        batch_size=3,
        num_workers=0,
        min_sizes=(H,),
        max_size=W,
        flip_prob=0.0,
        check_cache_dir=tmp_path / "cache",
        **kwargs,
    )
    return CocoDataModule(options, report_dir=tmp_path / "run")


def test_datamodule_prints_and_writes_the_report_and_drops_on_request(tmp_path, capsys):
    data = base_dataset()
    _ann(data, 1)["bbox"] = [-3, 2, 13, 8]
    _ann(data, 2)["bbox"] = [1, 1, 0, 5]
    ann_file, image_dir = write_dataset(tmp_path, data)
    with pytest.raises(DatasetError, match="annotation id 2 .*non-positive size"):
        _datamodule(ann_file, image_dir, tmp_path).setup("fit")
    dm = _datamodule(ann_file, image_dir, tmp_path, on_bad_records="drop")
    dm.setup("fit")
    out = capsys.readouterr().out
    assert "Dataset train" in out and "Dataset val" in out and "box clipped to the image (1)" in out
    assert "dropped 1 bad record(s)" in out and "annotation id 2 (image id 2)" in out
    written = json.loads((tmp_path / "run" / "data_report_train.json").read_text())
    assert (
        written["fixes"]["box clipped to the image"] == [1]
        and written["dropped"][0]["record"] == "annotation id 2 (image id 2)"
    )
    assert (tmp_path / "run" / "data_report_val.txt").read_text().startswith("Dataset val")
    images, targets = next(iter(dm.train_dataloader()))
    assert sorted(t["image_id"] for t in targets) == [1, 3]  # image 2 lost its only annotation


def test_an_image_that_breaks_during_training_is_named_and_follows_the_policy(tmp_path, caplog):
    ann_file, image_dir = write_dataset(tmp_path)
    strict = _datamodule(ann_file, image_dir, tmp_path)
    lenient = _datamodule(ann_file, image_dir, tmp_path, on_bad_records="drop")
    strict.setup("fit")
    lenient.setup("fit")
    (image_dir / "2.png").write_bytes(b"overwritten mid-run")
    with pytest.raises(DatasetError, match=r"2\.png.*image id 2 of .*changed on disk.*on_bad_records=drop"):
        strict.train_dataset[1]
    with caplog.at_level(logging.WARNING):
        _, target = lenient.train_dataset[1]
    assert target["image_id"] == 3 and "2.png" in caplog.text and "image id 3 is used in its place" in caplog.text
    with pytest.raises(DatasetError, match=r"2\.png"):  # evaluation never skips an image
        lenient.val_dataset[1]


def test_image_checks_are_cached_by_size_and_modification_time(tmp_path):
    ann_file, image_dir = write_dataset(tmp_path)
    first, first_report = _build(ann_file, image_dir, cache_dir=tmp_path / "cache")
    second, second_report = _build(ann_file, image_dir, cache_dir=tmp_path / "cache")
    assert first_report.counts["image_checks_cached"] == 0 and second_report.counts["image_checks_cached"] == 3
    Image.fromarray(pixels(5, H + 2, W)).save(image_dir / "3.png")
    os.utime(image_dir / "3.png", ns=(1, 1))
    with pytest.raises(DatasetError, match="3.png.*26x32"):
        _build(ann_file, image_dir, cache_dir=tmp_path / "cache")
    # a header answer does not stand in for a full decode
    full, full_report = _build(
        ann_file, image_dir, cache_dir=tmp_path / "cache2", check_images="full", on_bad_records="drop"
    )
    assert full_report.counts["image_checks_cached"] == 0


def test_check_dataset_tool(tmp_path, capsys):
    import runpy

    main = runpy.run_path(str(Path(__file__).parents[1] / "tools" / "check_dataset.py"))["main"]
    ann_file, image_dir = write_dataset(tmp_path)
    args = [str(ann_file), str(image_dir), "--masks", "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0 and "OK" in capsys.readouterr().out
    assert main([*args, "--num-classes", "4"]) == 1 and "model.num_classes=4" in capsys.readouterr().err
    (image_dir / "1.png").unlink()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1.png" in err and "image id 1" in err and "fix:" in err
