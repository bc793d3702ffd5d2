"""Test-time augmentation: one view is plain inference exactly, identical views merge back to it, a horizontally
symmetric image gives mirror-symmetric merged boxes, scales reach the detector's resize, the config refuses what
it cannot do, and tools/eval.py reports TTA beside plain inference."""

from __future__ import annotations

import pytest
import torch

from sasa_det.config import ConfigError
from sasa_det.engine.experiment import load_config
from sasa_det.evaluation import TestTimeAugmentation, TtaOptions
from sasa_det.evaluation.test_time_augmentation import _mirror, merge_detections
from tests.helpers import DEMO_CONFIG, load_tool


@pytest.fixture(scope="module")
def detector():
    """An untrained demo-like RetinaNet keeping every candidate (score threshold 0): many overlapping boxes."""
    from sasa_det.engine.tasks import get_task

    overrides = [
        "model.backbone={name: resnet26, base_width: 8, stage_ops: [conv, conv, sasa, aa]}",
        "model.fpn_channels=64",
        "model.min_size=64",
        "model.max_size=64",
    ]
    torch.manual_seed(0)
    model = get_task("detection").build_module(load_config(DEMO_CONFIG, overrides), None).model.eval()
    model.score_thresh = 0.0
    return model


def _images():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, 64, 64, generator=generator), torch.rand(3, 48, 80, generator=generator)]


@torch.no_grad()
def test_one_view_is_plain_inference_exactly(detector):
    plain = detector(_images())
    augmented = TestTimeAugmentation(detector, TtaOptions())(_images())
    for a, b in zip(plain, augmented):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("merge", ["wbf", "nms"])
@torch.no_grad()
def test_identical_views_merge_back_to_plain_inference(detector, merge):
    plain = detector(_images())
    twice = TestTimeAugmentation(detector, TtaOptions(scales=[1.0, 1.0], merge=merge))(_images())
    for a, b in zip(plain, twice):
        assert len(a["boxes"]) == len(b["boxes"]) > 10
        _assert_contains(a, b["boxes"], b["scores"], b["labels"])  # as sets: equal scores may come in another order


@torch.no_grad()
def test_symmetric_image_gives_symmetric_merged_boxes(detector):
    half = torch.rand(3, 64, 32, generator=torch.Generator().manual_seed(2))
    image = torch.cat([half, half.flip(-1)], dim=-1)  # mirror-symmetric, 64 x 64
    options = TtaOptions(flips=["none", "horizontal"], merge="wbf")
    merged = TestTimeAugmentation(detector, options)([image])[0]
    boxes, scores, labels = merged["boxes"], merged["scores"], merged["labels"]
    assert len(boxes) > 10
    # every merged box has its mirror image, except at the top-k cut where one of two equal scores may fall out
    above_cut = scores > scores.min() + 1e-6
    assert above_cut.sum() > 10
    _assert_contains(merged, _mirror(boxes[above_cut], 64), scores[above_cut], labels[above_cut])


def _assert_contains(result, boxes, scores, labels):
    """Every (box, score, label) has an equal one (1e-3 px, 1e-5) of the same label in ``result``."""
    for box, score, label in zip(boxes, scores, labels):
        distance = (result["boxes"] - box).abs().amax(1)
        distance = distance + (result["scores"] - score).abs() * 1e3
        distance = distance.masked_fill(result["labels"] != label, float("inf"))
        nearest = int(distance.argmin())
        assert float((result["boxes"][nearest] - box).abs().max()) < 1e-3
        assert abs(float(result["scores"][nearest] - score)) < 1e-5


@torch.no_grad()
def test_scales_set_the_detector_resize_per_view_and_restore_it(detector):
    seen = []
    handle = detector.backbone.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        TestTimeAugmentation(detector, TtaOptions(scales=[0.5, 1.0]))([torch.rand(3, 64, 64)])
    finally:
        handle.remove()
    assert seen == [(32, 32), (64, 64)]
    assert detector.transform.min_size == (64,) and detector.transform.max_size == 64


def test_wbf_fuses_overlapping_boxes_by_score_weight():
    view_a = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    view_b = {"boxes": torch.tensor([[1.0, 0, 11, 10]]), "scores": torch.tensor([0.3]), "labels": torch.tensor([1])}
    view_c = {"boxes": torch.tensor([[50.0, 50, 60, 60]]), "scores": torch.tensor([0.6]), "labels": torch.tensor([1])}
    merged = merge_detections([view_a, view_b, view_c], "wbf", 0.55, 100)
    # the first two fuse (IoU 9/11): x1 = (0 * 0.9 + 1 * 0.3) / 1.2 = 0.25; score = mean 0.6 * 2/3 views = 0.4;
    # the third is alone: 0.6 * 1/3 = 0.2
    torch.testing.assert_close(merged["boxes"], torch.tensor([[0.25, 0, 10.25, 10], [50.0, 50, 60, 60]]))
    torch.testing.assert_close(merged["scores"], torch.tensor([0.4, 0.2]))


def test_config_refuses_what_tta_cannot_do():
    with pytest.raises(ConfigError, match="horizontal"):
        load_config(DEMO_CONFIG, ["eval.tta.flips=[none,vertical]"])
    with pytest.raises(ConfigError, match="positive scales"):
        load_config(DEMO_CONFIG, ["eval.tta.scales=[0.0]"])
    with pytest.raises(ConfigError, match="Mask R-CNN"):
        load_config(DEMO_CONFIG, ["model.arch=mask_rcnn", "model.head_norm=null", "eval.tta.flips=[none,horizontal]"])


def test_eval_reports_tta_beside_plain(tiny_detection_run, tmp_path, capsys):
    argv = [tiny_detection_run["last_checkpoint"], "eval.tta.flips=[none,horizontal]", "--out", str(tmp_path)]
    result = load_tool("eval").main(argv)
    assert set(result["plain_metrics"]) == set(result["metrics"])
    assert (tmp_path / "metrics_plain.json").is_file() and (tmp_path / "metrics.json").is_file()
    assert "| bbox/AP | " in capsys.readouterr().out
