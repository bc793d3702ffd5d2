"""PackedRecords: the packed split gives back exactly the per-image records it was made of, and the dataset
over it exactly the items of a dataset over the plain list (the shapes set with masks, a converted VOC set)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sasa_det.data import (
    CocoDetectionDataset,
    DatasetChecks,
    PackedRecords,
    convert_voc,
    export_voc,
    load_checked_coco,
    make_shapes_dataset,
)


def _load_capturing_the_plain_records(monkeypatch, ann_file, image_dir, with_masks):
    """``load_checked_coco``'s records, and the plain ``ImageRecord`` list that was packed into them."""
    plain = []
    pack = PackedRecords.pack

    def capture(records, masks):
        plain.extend(records)
        return pack(records, masks)

    monkeypatch.setattr(PackedRecords, "pack", capture)
    records, _ = load_checked_coco(ann_file, image_dir, DatasetChecks(check_cache=False), with_masks=with_masks)
    return records, plain


def _assert_same_record(a, b):
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), field.name
        else:
            assert type(x) is type(y) and x == y, field.name


def _assert_same_items(packed_records, plain):
    old = CocoDetectionDataset(dataclasses.replace(packed_records, images=plain))
    new = CocoDetectionDataset(packed_records)
    for index in range(len(plain)):
        (image_a, target_a), (image_b, target_b) = old[index], new[index]
        assert torch.equal(image_a, image_b) and target_a.keys() == target_b.keys()
        for key, value in target_a.items():
            assert torch.equal(value, target_b[key]) if isinstance(value, torch.Tensor) else value == target_b[key]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(root, num_train=8, num_val=3, image_size=48, seed=5, category_ids=(3, 7, 11))


@pytest.mark.parametrize("with_masks", [False, True])
def test_packed_shapes_give_back_every_field_of_every_record(monkeypatch, shapes, tmp_path, with_masks):
    records, plain = _load_capturing_the_plain_records(
        monkeypatch, shapes["train_ann"], shapes["train_images"], with_masks
    )
    assert isinstance(records.images, PackedRecords) and len(records.images) == len(plain) == 8
    if with_masks:
        assert all(record.segmentations for record in plain)
    for index, record in enumerate(plain):
        _assert_same_record(record, records.images[index])
    _assert_same_record(plain[-1], records.images[-1])
    saved = tmp_path / "packed"
    records.images.save(saved)
    mapped = PackedRecords.load(saved)
    assert isinstance(mapped.boxes, np.memmap) and mapped.with_masks == with_masks
    for record, loaded in zip(plain, mapped, strict=True):
        _assert_same_record(record, loaded)
    _assert_same_items(records, plain)
    with pytest.raises(IndexError):
        records.images[len(plain)]


def test_packed_voc_conversion_gives_back_every_record(monkeypatch, shapes, tmp_path):
    export_voc([shapes["val_ann"]], [shapes["val_images"]], tmp_path / "voc")
    convert_voc(tmp_path / "voc" / "Annotations", tmp_path / "voc" / "JPEGImages", tmp_path / "voc.json")
    records, plain = _load_capturing_the_plain_records(
        monkeypatch, tmp_path / "voc.json", tmp_path / "voc" / "JPEGImages", False
    )
    assert len(plain) == 3 and sum(len(r.labels) for r in plain) == len(records.images.labels) > 0
    for record, packed in zip(plain, records.images, strict=True):
        _assert_same_record(record, packed)
    _assert_same_items(records, plain)


def test_a_training_split_keeps_no_ground_truth(shapes):
    records, _ = load_checked_coco(
        shapes["train_ann"], shapes["train_images"], DatasetChecks(check_cache=False), keep_ground_truth=False
    )
    assert records.ground_truth is None
    with pytest.raises(ValueError, match="keep_ground_truth=True"):
        _ = CocoDetectionDataset(records).coco


def test_empty_records_pack_and_save(tmp_path):
    packed = PackedRecords.pack([], with_masks=True)
    packed.save(tmp_path / "empty")
    loaded = PackedRecords.load(tmp_path / "empty")
    assert len(loaded) == 0 and loaded.boxes.shape == (0, 4) and list(loaded) == []
