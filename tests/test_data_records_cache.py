"""load_shared_records: a training split checked in a child process once, then read memory-mapped by every
process; an image changed on disk makes it check again; errors arrive whole."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sasa_det.data import DatasetChecks, DatasetError, load_checked_coco, load_shared_records, make_shapes_dataset


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=5, num_val=1, image_size=40, seed=9)


def _same(a, b):
    for x, y in zip(a.images, b.images, strict=True):
        assert (x.image_id, x.file_name, x.height, x.width) == (y.image_id, y.file_name, y.height, y.width)
        assert np.array_equal(x.boxes, y.boxes) and np.array_equal(x.labels, y.labels)
        assert x.segmentations == y.segmentations
    assert (a.category_ids, a.class_names, a.with_masks) == (b.category_ids, b.class_names, b.with_masks)


def test_checked_once_then_read_memory_mapped_until_an_image_changes(shapes, tmp_path):
    checks = DatasetChecks(check_cache_dir=str(tmp_path / "cache"))
    args = (shapes["train_ann"], shapes["train_images"], checks)
    reference, reference_report = load_checked_coco(*args, with_masks=True, keep_ground_truth=False)
    built, report = load_shared_records(*args, with_masks=True, name="train")
    assert not any("read from" in note for note in report.notes)
    again, again_report = load_shared_records(*args, with_masks=True, name="train")
    assert any("read from" in note for note in again_report.notes)
    assert isinstance(again.images.boxes, np.memmap) and again.ground_truth is None
    _same(reference, built)
    _same(reference, again)
    counts = {k: v for k, v in reference_report.counts.items() if k != "image_checks_cached"}
    assert {k: again_report.counts[k] for k in counts} == counts and again_report.fixes == reference_report.fixes
    other, _ = load_shared_records(*args, with_masks=False, name="train")  # other settings: another entry
    assert not other.with_masks and len(list((tmp_path / "cache" / "records").glob("*/meta.json"))) == 2
    image = os.path.join(shapes["train_images"], reference.images[0].file_name)
    os.utime(image, ns=(os.stat(image).st_atime_ns, os.stat(image).st_mtime_ns + 10**9))
    _, after_touch = load_shared_records(*args, with_masks=True, name="train")
    assert not any("read from" in note for note in after_touch.notes)  # checked again


def test_errors_of_the_child_arrive_whole(shapes, tmp_path):
    data = json.loads(open(shapes["train_ann"]).read())
    data["annotations"][0]["bbox"] = [1, 1, -5, 3]
    data["annotations"][1]["category_id"] = 999
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as info:
        load_shared_records(bad, shapes["train_images"], DatasetChecks(check_cache_dir=str(tmp_path / "cache")))
    assert len(info.value.problems) == 2 and "bad.json" in str(info.value) and "non-positive size" in str(info.value)
