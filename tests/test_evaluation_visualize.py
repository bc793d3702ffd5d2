"""Drawing detections and saving the prediction grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sasa_det.evaluation import draw_detections, save_detection_grid, to_uint8_image


def _prediction(score=0.9):
    masks = torch.zeros(1, 1, 30, 40)
    masks[0, 0, 12:20, 10:22] = 0.9
    return {
        "boxes": torch.tensor([[10.0, 12.0, 22.0, 20.0]]),
        "labels": torch.tensor([2]),
        "scores": torch.tensor([score]),
        "masks": masks,
    }


def test_draw_detections_marks_box_and_mask_only():
    image = torch.zeros(3, 30, 40)
    drawn = draw_detections(image, _prediction(), class_names=["a", "b"])
    assert drawn.dtype == torch.uint8 and drawn.shape == (3, 30, 40)
    changed = (drawn != 0).any(0)
    assert changed[12, 10:22].all() and changed[12:20, 10].all()  # box outline
    assert changed[15, 15]  # mask fill
    assert not changed[:, :9].any() and not changed[:11, :].any()  # left of and above the detection untouched


def test_low_scores_are_not_drawn_and_targets_without_scores_are():
    image = torch.rand(3, 30, 40)
    assert torch.equal(draw_detections(image, _prediction(score=0.1)), to_uint8_image(image))
    target = {k: v for k, v in _prediction().items() if k != "scores"}
    assert not torch.equal(draw_detections(image, target), to_uint8_image(image))


def test_grid_of_images_with_different_sizes(tmp_path):
    images = [torch.rand(3, 30, 40), torch.rand(3, 20, 25), torch.rand(3, 30, 40)]
    predictions = [
        _prediction(),
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)},
        _prediction(),
    ]
    path = save_detection_grid(images, predictions, tmp_path / "sub" / "grid.png", nrow=2)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 * 30 + 3 * 2, 2 * 40 + 3 * 2, 3)
    with pytest.raises(ValueError, match="as many predictions"):
        save_detection_grid(images, predictions[:1], tmp_path / "x.png")
