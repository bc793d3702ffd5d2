"""CocoDataModule: batch structure of the data contract, loader settings, split consistency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sasa_det.data import CocoDataModule, CocoDataOptions, collate_detection, make_shapes_dataset
from sasa_det.data.loading.sampling import ResumableSampler, ShardedSampler

SIZE = 64


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(root, num_train=6, num_val=4, image_size=SIZE, seed=2, category_ids=(2, 4, 8))


def _module(shapes, seed=0, **options) -> CocoDataModule:
    return CocoDataModule(CocoDataOptions(**{**shapes, **options}), seed=seed)


def _check_batch(images, targets, with_masks):
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets)
    for image, target in zip(images, targets):
        assert type(image) is torch.Tensor and image.dtype == torch.float32 and image.dim() == 3
        assert image.shape[0] == 3 and 0.0 <= image.min() and image.max() <= 1.0
        keys = {"boxes", "labels", "image_id", "orig_size"} | ({"masks"} if with_masks else set())
        assert set(target) == keys
        boxes, labels = target["boxes"], target["labels"]
        assert boxes.dtype == torch.float32 and boxes.shape == (len(labels), 4)
        assert labels.dtype == torch.int64 and ((labels >= 1) & (labels <= 3)).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert (boxes[:, 2] <= image.shape[2]).all() and (boxes[:, 3] <= image.shape[1]).all()
        assert isinstance(target["image_id"], int) and target["orig_size"] == (SIZE, SIZE)
        if with_masks:
            assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (len(labels), *image.shape[1:])


@pytest.mark.parametrize("with_masks", [False, True])
def test_batches_follow_the_data_contract(shapes, with_masks):
    dm = _module(
        shapes, batch_size=3, val_batch_size=2, num_workers=0, min_sizes=(48, 96), max_size=96, with_masks=with_masks
    )
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert len(images) == 3
    _check_batch(images, targets, with_masks)
    assert all(min(i.shape[1:]) in (48, 96) for i in images)
    val_images, val_targets = next(iter(dm.val_dataloader()))
    assert len(val_images) == 2
    _check_batch(val_images, val_targets, with_masks)
    # validation images keep their original size, in file order
    assert all(i.shape[1:] == (SIZE, SIZE) for i in val_images)
    assert [t["image_id"] for t in val_targets] == [1, 2]


def test_class_mapping_and_ground_truth_are_exposed(shapes):
    dm = _module(shapes, num_workers=0)
    assert dm.num_classes == 3
    assert dm.class_names == ["circle", "square", "triangle"]
    assert dm.label_to_category == {1: 2, 2: 4, 3: 8}
    assert sorted(dm.val_dataset.coco.cats) == [2, 4, 8]
    assert len(dm.val_dataset) == 4 and len(dm.train_dataset) == 6


def test_loader_settings(shapes):
    dm = _module(shapes, batch_size=2, num_workers=2)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert isinstance(train.sampler, ResumableSampler) and isinstance(val.sampler, ShardedSampler)
    assert train.persistent_workers and train.num_workers == 2
    assert train.collate_fn is collate_detection and val.batch_size == 2
    assert train.pin_memory == torch.cuda.is_available()
    assert not _module(shapes, num_workers=0).train_dataloader().persistent_workers


def test_training_batches_depend_on_the_seed_alone_and_resume_mid_epoch(shapes):
    """Same seed -> identical augmented batches whatever the worker count; a loader restored to 'epoch 1, one
    batch done' yields exactly the rest of epoch 1."""

    def batches(loader):
        return [
            (torch.cat([im.flatten() for im in images]), [int(t["image_id"]) for t in targets])
            for images, targets in loader
        ]

    dm = _module(shapes, batch_size=2, num_workers=0, min_sizes=[48, 64], max_size=64, seed=7)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    epoch1 = batches(loader)
    other = _module(shapes, batch_size=2, num_workers=2, min_sizes=[48, 64], max_size=64, seed=7).train_dataloader()
    other.sampler.set_epoch(1)
    for (a, ids_a), (b, ids_b) in zip(epoch1, batches(other), strict=True):
        assert ids_a == ids_b and torch.equal(a, b)
    loader.sampler.set_epoch(0)
    assert [ids for _, ids in batches(loader)] != [ids for _, ids in epoch1]  # a new order each epoch
    resumed = _module(shapes, batch_size=2, num_workers=0, min_sizes=[48, 64], max_size=64, seed=7).train_dataloader()
    resumed.load_state_dict({"epoch": 1, "batches_done": 1, "batch_size": 2})
    rest = batches(resumed)
    assert len(rest) == len(epoch1) - 1 and all(torch.equal(a, b) for (a, _), (b, _) in zip(rest, epoch1[1:]))
    assert len(resumed) == len(epoch1)  # the epoch's length stays whole for Lightning's bookkeeping


def test_samplers_shard_every_index_across_ranks():
    for world in (1, 2, 3):
        shards = [list(ShardedSampler(7, rank, world)) for rank in range(world)]
        assert sorted(i for shard in shards for i in shard) == list(range(7))  # validation: each index once
        train = [[i for i, _ in ResumableSampler(7, seed=3, rank=rank, world_size=world)] for rank in range(world)]
        assert len({len(shard) for shard in train}) == 1  # equal step counts on every rank
        assert set(i for shard in train for i in shard) == set(range(7))


def test_worker_processes_produce_the_same_validation_batches(shapes):
    single = _module(shapes, val_batch_size=2, num_workers=0).val_dataloader()
    multi = _module(shapes, val_batch_size=2, num_workers=1).val_dataloader()
    for (a_images, a_targets), (b_images, b_targets) in zip(single, multi):
        for a, b in zip(a_images, b_images):
            torch.testing.assert_close(a, b)
        assert [t["image_id"] for t in a_targets] == [t["image_id"] for t in b_targets]


def test_validation_only_module(shapes):
    dm = _module(shapes, train_images=None, train_ann=None, num_workers=0)
    dm.setup("validate")
    assert dm.num_classes == 3
    with pytest.raises(ValueError, match="no training split"):
        dm.train_dataloader()


def test_splits_with_different_categories_are_rejected(shapes, tmp_path):
    data = json.loads(Path(shapes["val_ann"]).read_text())
    data["categories"][0]["name"] = "disc"
    other = tmp_path / "val.json"
    other.write_text(json.dumps(data))
    dm = _module(shapes, val_ann=other, num_workers=0)
    with pytest.raises(ValueError, match="different categories"):
        dm.setup("fit")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(train_images=None, train_ann=None, val_images=None, val_ann=None), "at least one split"),
        (dict(train_ann=None), "train_images and train_ann"),
        (dict(batch_size=0), "batch sizes"),
        (dict(num_workers=-1), "num_workers"),
        (dict(min_sizes=(800,), max_size=100), "max_size"),
    ],
)
def test_bad_arguments_are_rejected(shapes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _module(shapes, **kwargs)
