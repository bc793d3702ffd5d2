"""Drawing detections and saving the prediction grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sasa_det.evaluation import draw_detections, save_detection_grid, to_uint8_image
from sasa_det.evaluation.visualize import _PALETTE, MIN_DRAWN_SIDE


def _prediction(score=0.9):
    masks = torch.zeros(1, 1, 30, 40)
    masks[0, 0, 12:20, 10:22] = 0.9
    return {
        "boxes": torch.tensor([[10.0, 12.0, 22.0, 20.0]]),
        "labels": torch.tensor([2]),
        "scores": torch.tensor([score]),
        "masks": masks,
    }


def test_draw_detections_marks_box_mask_and_a_label_tag_only():
    image = torch.zeros(3, 30, 60)  # wide enough for the outlined tag to start at the box's left edge
    prediction = _prediction()
    prediction["masks"] = torch.nn.functional.pad(prediction["masks"], (0, 20))
    drawn = draw_detections(image, prediction, class_names=["a", "b"], min_side=0)
    assert drawn.dtype == torch.uint8 and drawn.shape == (3, 30, 60)
    changed = (drawn != 0).any(0)
    assert changed[12, 10:22].all() and changed[12:20, 10].all()  # box outline
    assert changed[15, 15]  # mask fill
    assert not changed[:, :9].any()  # left of the detection untouched (the tag starts at the box's left edge)


def test_small_images_are_drawn_enlarged_with_boxes_and_masks_scaled():
    image = torch.zeros(3, 30, 40)
    drawn = draw_detections(image, _prediction(), class_names=["a", "b"])
    factor = -(-MIN_DRAWN_SIDE // 40)  # the smallest whole factor that brings the longer side to 512
    assert drawn.shape == (3, 30 * factor, 40 * factor)
    changed = (drawn != 0).any(0)
    assert changed[12 * factor, 10 * factor : 22 * factor].all()  # the box, scaled
    assert changed[16 * factor, 16 * factor]  # the mask, scaled
    assert not changed[:, : 9 * factor].any()


def _drawn_pixels(box: list[float]) -> torch.Tensor:
    """Where drawing one box labelled "long class name" on a black 200×200 image changes pixels."""
    prediction = {"boxes": torch.tensor([box]), "labels": torch.tensor([1])}
    drawn = draw_detections(torch.zeros(3, 200, 200), prediction, ["long class name"], min_side=0, box_width=1)
    return (drawn != 0).any(0)


def test_labels_sit_on_a_tag_above_the_box_or_below_it_never_over_the_object():
    changed = _drawn_pixels([50.0, 80.0, 150.0, 150.0])
    assert not changed[82:149, 52:149].any()  # the object inside the box stays visible
    assert changed[60:79, 50:60].any() and not changed[152:, :].any()  # the tag is above the box (and its outline)
    changed = _drawn_pixels([50.0, 0.0, 150.0, 60.0])
    assert not changed[2:59, 52:149].any() and changed[61:80, 50:60].any()  # no room above: below the box


@pytest.mark.parametrize("label", range(1, len(_PALETTE) + 1))
def test_boxes_and_labels_stay_visible_on_a_background_of_their_own_colour(label):
    colour = _PALETTE[label - 1]
    background = torch.tensor(colour, dtype=torch.uint8)[:, None, None].expand(3, 120, 160).contiguous()
    prediction = {"boxes": torch.tensor([[40.0, 50.0, 120.0, 100.0]]), "labels": torch.tensor([label])}
    drawn = draw_detections(background, prediction, ["class"], min_side=0)
    differs = (drawn.int() - background.int()).abs().amax(0) > 100  # clearly visible against the background
    # every side of the box has a line of another colour along its whole length, outside and inside the box
    assert differs[49, 40:121].all() and differs[101, 40:121].all() and differs[50:101, 39].all()
    assert differs[50:101, 121].all() and differs[52, 42:119].all() and differs[52:99, 42].all()
    # the tag above the box: its outline and its text stand out
    tag = differs[:48, 40:]
    assert tag.sum() > 50 and tag.any(1).sum() >= 8, "the label tag is invisible"


def test_low_scores_are_not_drawn_and_targets_without_scores_are():
    image = torch.rand(3, 30, 40)
    assert torch.equal(draw_detections(image, _prediction(score=0.1), min_side=0), to_uint8_image(image))
    target = {k: v for k, v in _prediction().items() if k != "scores"}
    assert not torch.equal(draw_detections(image, target, min_side=0), to_uint8_image(image))


def test_grid_of_images_with_different_sizes(tmp_path):
    images = [torch.rand(3, 30, 40), torch.rand(3, 20, 25), torch.rand(3, 30, 40)]
    predictions = [
        _prediction(),
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)},
        _prediction(),
    ]
    path = save_detection_grid(images, predictions, tmp_path / "sub" / "grid.png", nrow=2)
    grid = np.asarray(Image.open(path))
    big, small = -(-MIN_DRAWN_SIDE // 40), -(-MIN_DRAWN_SIDE // 25)  # each image enlarged for legible labels
    height, width = max(30 * big, 20 * small), max(40 * big, 25 * small)
    assert grid.shape == (2 * height + 3 * 2, 2 * width + 3 * 2, 3)
    with pytest.raises(ValueError, match="as many predictions"):
        save_detection_grid(images, predictions[:1], tmp_path / "x.png")


def test_prediction_grid_draws_each_image_beside_its_ground_truth_so_misses_show(tmp_path):
    from sasa_det.evaluation import save_prediction_grid

    class MissesEverything(torch.nn.Module):
        """A detector that finds nothing (one low-scoring box below the threshold)."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, images):
            box = {
                "boxes": torch.tensor([[2.0, 2.0, 9.0, 9.0]]),
                "labels": torch.tensor([1]),
                "scores": torch.tensor([0.1]),
            }
            return [dict(box) for _ in images]

    side = MIN_DRAWN_SIDE  # drawn at its own size
    truth = {"boxes": torch.tensor([[100.0, 120.0, 300.0, 260.0]]), "labels": torch.tensor([3])}
    dataset = [(torch.zeros(3, side, side), truth), (torch.zeros(3, side, side), truth)]
    path = save_prediction_grid(
        MissesEverything(), dataset, tmp_path / "predictions.png", count=2, class_names=list("abc")
    )
    grid = np.asarray(Image.open(path))
    assert grid.shape == (side + 2 * 2, 2 * (2 * side) + 3 * 2, 3)  # one row of two pairs, each twice as wide
    gt_panel, prediction_panel = grid[2 : 2 + side, 2 : 2 + side], grid[2 : 2 + side, 2 + side : 2 + 2 * side]
    colour = np.array(_PALETTE[3 - 1])  # label 3's colour
    on_box = (gt_panel == colour).all(-1)
    assert on_box[120, 100:300].any() and on_box[120:260, 100].any()  # the ground-truth box's outline
    assert not on_box[:100].any()  # nothing drawn above it apart from its tag
    assert not (prediction_panel != 0).any()  # the detector's one box is below the threshold: the miss shows
    plain = save_prediction_grid(MissesEverything(), dataset, tmp_path / "plain.png", count=2, ground_truth=False)
    assert np.asarray(Image.open(plain)).shape == (side + 4, 2 * side + 3 * 2, 3)
