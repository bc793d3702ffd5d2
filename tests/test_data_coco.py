"""load_checked_coco and CocoDetectionDataset on a hand-written COCO file with every edge case in it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from sasa_det.data import CocoDetectionDataset, DatasetChecks, DatasetError, load_checked_coco

H, W = 30, 40


def _rect_rle_uncompressed(x0, y0, x1, y1):
    """Uncompressed (column-major) RLE of a filled rectangle [x0, x1) x [y0, y1)."""
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}, mask


def _write(root: Path, data: dict, images=(1, 2)) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in images:
        Image.fromarray(np.full((H, W, 3), 40 * i, dtype=np.uint8)).save(root / "img" / f"{i}.png")
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(data))
    return ann_file


def _ann(ann_id, category_id, bbox, segmentation, area, iscrowd=0, image_id=1) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "iscrowd": iscrowd,
        "segmentation": segmentation,
        "area": area,
    }


def _dataset_dict() -> dict:
    compressed = mask_utils.encode(np.asfortranarray(np.pad(np.ones((6, 5), np.uint8), ((20, 4), (30, 5)))))
    compressed["counts"] = compressed["counts"].decode("ascii")
    uncompressed, _ = _rect_rle_uncompressed(2, 20, 9, 28)
    return {
        "images": [
            {"id": 1, "file_name": "1.png", "height": H, "width": W},
            {"id": 2, "file_name": "2.png", "height": H, "width": W},
        ],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}, {"id": 11, "name": "eleven"}],
        "annotations": [
            # polygon triangle, category 7
            _ann(10, 7, [2, 3, 10, 8], [[2, 3, 12, 3, 7, 11]], area=40),
            # compressed RLE, category 3
            _ann(11, 3, [30, 20, 5, 6], compressed, area=30),
            # uncompressed RLE, category 11
            _ann(12, 11, [2, 20, 7, 8], uncompressed, area=56),
            # crowd: never a training target
            _ann(13, 7, [0, 0, 20, 20], uncompressed, area=400, iscrowd=1),
            # degenerate: 0.5 px wide
            _ann(14, 3, [5, 5, 0.5, 10], [[5, 5, 5.5, 5, 5.5, 15]], area=2),
            # partly outside: clipped to [35, 0, 40, 6]
            _ann(16, 7, [35, -4, 10, 10], [[35, 0, 39, 0, 39, 5, 35, 5]], area=20),
            # a 2-point "polygon" (pycocotools would read 4 numbers as a box): invalid segmentation
            _ann(17, 7, [20, 2, 5, 5], [[20, 2, 25, 7]], area=25),
        ],
    }


@pytest.fixture
def ann_file(tmp_path) -> Path:
    return _write(tmp_path, _dataset_dict())


def _load(image_dir, ann_file, transforms=None, check_images="header", on_bad_records="error", **kwargs):
    """``(dataset, report)`` of a split, loaded as the data module loads one."""
    records, report = load_checked_coco(ann_file, image_dir, DatasetChecks(check_images, on_bad_records), **kwargs)
    return CocoDetectionDataset(records, transforms), report


def test_gapped_category_ids_map_to_contiguous_labels_and_back(ann_file):
    ds, _ = _load(ann_file.parent / "img", ann_file)
    assert ds.category_to_label == {3: 1, 7: 2, 11: 3}
    assert ds.label_to_category == {1: 3, 2: 7, 3: 11}
    assert ds.class_names == ["three", "seven", "eleven"]
    assert ds.num_classes == 3


def test_targets_boxes_labels_and_filter_counts(ann_file, caplog):
    with caplog.at_level(logging.INFO, logger="sasa_det.data.coco.reader"):
        ds, report = _load(ann_file.parent / "img", ann_file)
    assert "removed 1 degenerate boxes" in caplog.text and "ignored 1 crowd" in caplog.text
    assert report.counts["crowd_ignored"] == 1
    assert report.counts["degenerate_boxes"] == 1 and report.counts["clipped_boxes"] == 1
    assert report.fixes["box clipped to the image"] == [16]
    assert len(ds) == 2 and ds.image_ids == [1, 2]
    image, target = ds[0]
    assert type(image) is torch.Tensor and image.dtype == torch.float32 and image.shape == (3, H, W)
    assert torch.allclose(image, torch.full_like(image, 40 / 255))
    assert target["image_id"] == 1 and target["orig_size"] == (H, W)
    assert "masks" not in target
    # annotations 10, 11, 12, 16, 17 in file order (17 is kept: its segmentation is not needed)
    expected = torch.tensor(
        [[2, 3, 12, 11], [30, 20, 35, 26], [2, 20, 9, 28], [35, 0, 40, 6], [20, 2, 25, 7]], dtype=torch.float32
    )
    torch.testing.assert_close(target["boxes"], expected)
    assert target["labels"].tolist() == [2, 1, 3, 2, 2] and target["labels"].dtype == torch.int64
    empty_image, empty = ds[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_masks_match_pycocotools_for_polygon_and_both_rle_kinds(ann_file):
    # annotation 17's only polygon part has 2 points: it cannot make a mask, and is dropped on request
    ds, report = _load(ann_file.parent / "img", ann_file, with_masks=True, on_bad_records="drop")
    assert [p.record for p in report.dropped] == ["annotation id 17 (image id 1)"]
    _, target = ds[0]
    masks = target["masks"]
    assert masks.dtype == torch.uint8 and masks.shape == (4, H, W)
    for mask, ann_id in zip(masks, [10, 11, 12, 16]):
        reference = ds.coco.annToMask(ds.coco.anns[ann_id])
        assert mask.sum() > 0
        np.testing.assert_array_equal(mask.numpy(), reference)
    _, uncompressed_reference = _rect_rle_uncompressed(2, 20, 9, 28)
    np.testing.assert_array_equal(masks[2].numpy(), uncompressed_reference)
    assert masks[1].numpy()[20:26, 30:35].all() and masks[1].sum() == 30
    _, empty = ds[1]
    assert empty["masks"].shape == (0, H, W)


def test_images_without_annotations_kept_or_dropped(ann_file):
    dropped, report = _load(ann_file.parent / "img", ann_file, keep_empty=False)
    assert len(dropped) == 1 and dropped.image_ids == [1]
    assert report.counts["images_dropped_empty"] == 1 and report.counts["images_without_annotations"] == 1


def test_image_whose_boxes_are_all_degenerate_counts_as_empty(tmp_path):
    data = _dataset_dict()
    data["annotations"] = [a for a in data["annotations"] if a["id"] in (13, 14)]  # crowd + degenerate only
    ann_file = _write(tmp_path, data)
    assert len(_load(tmp_path / "img", ann_file, keep_empty=True)[0]) == 2
    # nothing left to train on is an error that names the file, not an empty loader failing later
    with pytest.raises(DatasetError, match="ann.json: no image is left"):
        load_checked_coco(ann_file, tmp_path / "img", keep_empty=False)


def test_transforms_receive_tv_tensors(ann_file):
    seen = {}

    def probe(image, target):
        seen["image"], seen["boxes"], seen["masks"] = type(image).__name__, target["boxes"], target["masks"]
        return image, target

    ds, _ = _load(ann_file.parent / "img", ann_file, transforms=probe, with_masks=True, on_bad_records="drop")
    image, target = ds[0]
    assert seen["image"] == "Image" and type(seen["boxes"]).__name__ == "BoundingBoxes"
    assert tuple(seen["boxes"].canvas_size) == (H, W) and type(seen["masks"]).__name__ == "Mask"
    # uint8 output of a transform is still converted to float 0..1, and tv_tensors are unwrapped
    assert image.dtype == torch.float32 and type(target["boxes"]) is torch.Tensor


def _expect_error(tmp_path, mutate, error, *fragments, with_masks=False):
    data = _dataset_dict()
    mutate(data)
    ann_file = _write(tmp_path, data)
    with pytest.raises(error) as info:
        load_checked_coco(ann_file, tmp_path / "img", with_masks=with_masks)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_unknown_category_names_file_record_and_fix(tmp_path):
    def mutate(d):
        d["annotations"][0]["category_id"] = 99

    _expect_error(tmp_path, mutate, ValueError, "ann.json", "annotation id 10", "image id 1", "99", "add the category")


def test_unknown_image_is_an_error(tmp_path):
    def mutate(d):
        d["annotations"][1]["image_id"] = 5

    _expect_error(tmp_path, mutate, ValueError, "ann.json", "annotation id 11", "not in 'images'")


@pytest.mark.parametrize("bbox", [[1, 2, 3], [1, 2, -3, 4], [1, "a", 3, 4], None, [1, 2, float("nan"), 3]])
def test_malformed_bbox_is_an_error(tmp_path, bbox):
    def mutate(d):
        d["annotations"][2]["bbox"] = bbox

    _expect_error(tmp_path, mutate, ValueError, "annotation id 12", "bbox", "[x, y, width, height]")


def test_duplicate_ids_and_missing_fields_are_errors(tmp_path):
    def dup_image(d):
        d["images"][1]["id"] = 1

    _expect_error(tmp_path / "a", dup_image, ValueError, "image id 1: appears twice")

    def no_height(d):
        del d["images"][0]["height"]

    _expect_error(tmp_path / "b", no_height, ValueError, "image id 1", "'height'")

    def dup_annotation(d):
        d["annotations"][1]["id"] = 10

    _expect_error(tmp_path / "c", dup_annotation, ValueError, "annotation id 10: appears twice")


def test_missing_segmentation_with_masks_is_an_error(tmp_path):
    def mutate(d):
        del d["annotations"][0]["segmentation"]

    _expect_error(tmp_path, mutate, ValueError, "annotation id 10", "with_masks=False", with_masks=True)


def test_missing_files_are_named(tmp_path, ann_file):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_checked_coco(tmp_path / "nope.json", ann_file.parent / "img")
    with pytest.raises(FileNotFoundError, match="no_dir"):
        load_checked_coco(ann_file, tmp_path / "no_dir")
    # without the image check, a file that disappears is named when it is loaded
    ds, _ = _load(ann_file.parent / "img", ann_file, check_images="off")
    (ann_file.parent / "img" / "2.png").unlink()
    with pytest.raises(DatasetError) as info:
        ds[1]
    assert "2.png" in str(info.value) and "image id 2" in str(info.value) and "on_bad_records" in str(info.value)


def test_invalid_json_and_size_mismatch(tmp_path, ann_file):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        load_checked_coco(bad, ann_file.parent / "img")
    ds, _ = _load(ann_file.parent / "img", ann_file, check_images="off")
    Image.fromarray(np.zeros((H + 1, W, 3), dtype=np.uint8)).save(ann_file.parent / "img" / "1.png")
    with pytest.raises(DatasetError, match="image id 1.*31x40"):
        ds[0]
