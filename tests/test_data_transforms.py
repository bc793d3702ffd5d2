"""Training/validation transforms: boxes and masks follow the image through flips and resizes."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from sasa_det.data import build_train_transforms, build_val_transforms

H, W = 30, 40
BOXES = [[2.0, 3.0, 12.0, 11.0], [25.0, 10.0, 39.0, 30.0], [0.0, 0.0, 6.0, 4.0]]


def _sample():
    """Random image; each box's mask is exactly the box rectangle (boxes have integer corners)."""
    generator = torch.Generator().manual_seed(0)
    image = tv_tensors.Image(torch.randint(0, 256, (3, H, W), dtype=torch.uint8, generator=generator))
    masks = torch.zeros(len(BOXES), H, W, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(BOXES):
        masks[i, int(y1) : int(y2), int(x1) : int(x2)] = 1
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(BOXES), format="XYXY", canvas_size=(H, W)),
        "labels": torch.tensor([1, 2, 3]),
        "masks": tv_tensors.Mask(masks),
        "image_id": 5,
        "orig_size": (H, W),
    }
    return image, target


def _mask_box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0]


def test_flip_moves_image_boxes_and_masks_consistently():
    image, target = _sample()
    # min_sizes equal to the shorter side: the resize keeps the size, only the flip acts
    out_image, out = build_train_transforms(min_sizes=(H,), max_size=None, flip_prob=1.0)(image, target)
    assert out_image.shape == (3, H, W) and out_image.dtype == torch.float32
    torch.testing.assert_close(out_image, image.flip(-1).float() / 255)
    expected = torch.tensor([[W - x2, y1, W - x1, y2] for x1, y1, x2, y2 in BOXES])
    torch.testing.assert_close(out["boxes"].as_subclass(torch.Tensor), expected)
    torch.testing.assert_close(
        out["masks"].as_subclass(torch.Tensor), target["masks"].flip(-1).as_subclass(torch.Tensor)
    )
    for mask, box in zip(out["masks"], out["boxes"]):
        assert _mask_box(mask) == box.tolist()
    assert out["labels"].tolist() == [1, 2, 3] and out["image_id"] == 5 and out["orig_size"] == (H, W)


def test_no_flip_when_probability_is_zero():
    image, target = _sample()
    out_image, out = build_train_transforms(min_sizes=(H,), max_size=None, flip_prob=0.0)(image, target)
    torch.testing.assert_close(out_image, image.float() / 255)
    torch.testing.assert_close(out["boxes"].as_subclass(torch.Tensor), torch.tensor(BOXES))


@pytest.mark.parametrize(
    "min_size, max_size, expected_hw",
    [
        (60, None, (60, 80)),  # shorter side 30 -> 60: scale 2
        (60, 70, (52, 70)),  # the longer side caps the scale at 70 / 40 = 1.75
        (15, 1000, (15, 20)),  # downscale by 2
    ],
)
def test_resize_scales_boxes_and_masks_with_the_image(min_size, max_size, expected_hw):
    image, target = _sample()
    out_image, out = build_train_transforms(min_sizes=(min_size,), max_size=max_size, flip_prob=0.0)(image, target)
    new_h, new_w = out_image.shape[-2:]
    assert (new_h, new_w) == expected_hw
    assert out["masks"].shape[-2:] == (new_h, new_w)
    sx, sy = new_w / W, new_h / H
    kept = torch.tensor(BOXES)
    expected = kept * torch.tensor([sx, sy, sx, sy])
    torch.testing.assert_close(out["boxes"].as_subclass(torch.Tensor), expected)
    for mask, box in zip(out["masks"], expected):
        # nearest-neighbour mask resizing agrees with the box to within a pixel
        assert max(abs(a - b) for a, b in zip(_mask_box(mask), box.tolist())) <= 1.0


def test_multiscale_jitter_draws_from_the_given_sizes():
    image, target = _sample()
    transform = build_train_transforms(min_sizes=(20, 30, 45), max_size=None, flip_prob=0.5)
    torch.manual_seed(0)
    shorter = {transform(image, target)[0].shape[-2] for _ in range(30)}
    assert shorter == {20, 30, 45}


def test_boxes_too_small_after_resize_are_removed_with_labels_and_masks():
    image, target = _sample()
    target["boxes"] = tv_tensors.BoundingBoxes(
        torch.tensor([[2.0, 3.0, 12.0, 11.0], [20.0, 20.0, 21.5, 28.0], [0.0, 0.0, 6.0, 4.0]]),
        format="XYXY",
        canvas_size=(H, W),
    )
    _, out = build_train_transforms(min_sizes=(15,), max_size=None, flip_prob=0.0)(image, target)
    # the 1.5-px-wide box becomes 0.75 px wide: dropped together with its label and mask
    assert out["labels"].tolist() == [1, 3]
    assert out["masks"].shape[0] == 2 and out["boxes"].shape == (2, 4)


def test_val_transform_only_converts_to_float():
    image, target = _sample()
    out_image, out = build_val_transforms()(image, target)
    assert out_image.shape == (3, H, W) and out_image.dtype == torch.float32
    assert 0.0 <= out_image.min() and out_image.max() <= 1.0
    torch.testing.assert_close(out["boxes"].as_subclass(torch.Tensor), torch.tensor(BOXES))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(min_sizes=()), "min_sizes"),
        (dict(min_sizes=(0,)), "min_sizes"),
        (dict(min_sizes=(800,), max_size=600), "max_size"),
        (dict(flip_prob=1.5), "flip_prob"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_train_transforms(**kwargs)
