"""AspectRatioGroupedSampler: batches of one orientation, every image each epoch, disjoint ranks, resumable;
and the data module's training loader with data.aspect_ratio_grouping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sasa_det.data import CocoDataModule, CocoDataOptions
from sasa_det.data.loading.sampling import AspectRatioGroupedSampler, orientation_groups


def _batches(sampler, batch_size):
    indices = [index for index, _ in sampler]
    assert len(indices) % batch_size == 0
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_batches_hold_one_group_cover_every_image_and_shard_across_ranks(world, batch_size):
    groups = orientation_groups(*np.random.default_rng(world).integers(10, 20, size=(2, 23)))
    assert 0 < groups.sum() < len(groups)
    shards = [
        _batches(AspectRatioGroupedSampler(groups, batch_size, seed=5, rank=rank, world_size=world), batch_size)
        for rank in range(world)
    ]
    assert len({len(shard) for shard in shards}) == 1  # the same number of steps on every rank
    every = [index for shard in shards for batch in shard for index in batch]
    assert set(every) == set(range(len(groups)))  # every image in the epoch
    assert all(len(set(groups[batch].tolist())) == 1 for shard in shards for batch in shard)  # never mixed
    # repeats only complete each group's last batch and equalise the ranks
    assert len(every) - len(groups) <= 2 * (batch_size - 1) + (world - 1) * batch_size
    sampler = AspectRatioGroupedSampler(groups, batch_size, seed=5, rank=0, world_size=world)
    assert len(sampler) == len(shards[0]) * batch_size


def test_order_follows_the_seed_and_epoch_and_resumes_mid_epoch():
    groups = orientation_groups([30, 40, 40, 30, 30, 40, 40, 40, 30, 40, 30, 30], [40, 30] * 6)
    sampler = AspectRatioGroupedSampler(groups, 2, seed=3, rank=1, world_size=2)
    sampler.set_epoch(4)
    epoch4 = list(sampler)
    again = AspectRatioGroupedSampler(groups, 2, seed=3, rank=1, world_size=2)
    again.set_epoch(4)
    assert list(again) == epoch4
    again.set_epoch(5)
    assert [i for i, _ in again] != [i for i, _ in epoch4]
    resumed = AspectRatioGroupedSampler(groups, 2, seed=3, rank=1, world_size=2)
    resumed.start_at(4, 2 * 2)  # two batches done
    assert list(resumed) == epoch4[4:]


def _mixed_orientation_split(root, count=10):
    (root / "img").mkdir(parents=True)
    images, annotations = [], []
    for i in range(1, count + 1):
        w, h = (40, 30) if i % 3 else (30, 40)
        Image.fromarray(np.full((h, w, 3), 10 * i, dtype=np.uint8)).save(root / "img" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": w, "height": h})
        annotations.append(
            {"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0}
        )
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    (root / "ann.json").write_text(json.dumps(data))
    return {"train_ann": str(root / "ann.json"), "train_images": str(root / "img")}


def test_grouped_training_loader_never_mixes_orientations_and_resumes(tmp_path):
    paths = _mixed_orientation_split(tmp_path)

    def loader():
        options = CocoDataOptions(
            **paths, batch_size=3, num_workers=0, min_sizes=[30], max_size=40, aspect_ratio_grouping=True
        )
        return CocoDataModule(options, seed=1, progress=False).train_dataloader()

    def batches(data):
        return [
            ([int(t["image_id"]) for t in targets], [tuple(im.shape[1:]) for im in images]) for images, targets in data
        ]

    full = loader()
    full.sampler.set_epoch(2)
    epoch = batches(full)
    assert {i for ids, _ in epoch for i in ids} == set(range(1, 11))
    for _, shapes in epoch:
        assert len({h > w for h, w in shapes}) == 1  # one orientation per batch
    resumed = loader()
    resumed.load_state_dict({"epoch": 2, "batches_done": 2, "batch_size": 3})
    assert batches(resumed) == epoch[2:]
    assert len(resumed) == len(epoch)
    plain = CocoDataModule(CocoDataOptions(**paths, num_workers=0), progress=False).train_dataloader()
    assert type(plain.sampler).__name__ == "ResumableSampler"
    assert torch.is_tensor(next(iter(plain))[0][0])
