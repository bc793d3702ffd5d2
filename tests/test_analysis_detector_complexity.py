"""Detector parameter and FLOP accounting against hand-written formulas and torchvision's own model."""

import math

import pytest
import torch
from torchvision.models.detection import retinanet_resnet50_fpn

from sasa_det.analysis.detector_complexity import PAPER_DETECTORS, measure_detector, paper_detector_table
from sasa_det.analysis.model_info import count_flops, count_parameters
from sasa_det.engine.tasks.detection import preset_detection_model

SIZE = 64
TINY = {"base_width": 8, "norm": "bn"}


def _level_pixels(size):
    return [math.ceil(size / 2**level) ** 2 for level in range(3, 8)]


def test_conv_retinanet_resnet50_has_torchvisions_parameter_count():
    ours = preset_detection_model("retinanet", 80, backbone="resnet50", backbone_overrides={"norm": "bn"})
    reference = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=81)
    assert count_parameters(ours) == count_parameters(reference)


@pytest.mark.parametrize("attention", [False, True])
def test_dense_flops_are_backbone_plus_pyramid_plus_heads(attention):
    c, a, k = 64, 9, 4  # pyramid channels (GroupNorm(32) needs > 1 value per group on 1x1 P7), anchors, classes
    kind = "attention" if attention else "conv"
    info = measure_detector(
        "tiny", "retinanet", 3, SIZE, backbone="resnet26", backbone_overrides=TINY, fpn=kind, head=kind, fpn_channels=c
    )
    model = preset_detection_model(
        "retinanet",
        3,
        backbone="resnet26",
        backbone_overrides=TINY,
        fpn=kind,
        head=kind,
        fpn_channels=c,
        min_size=SIZE,
        max_size=SIZE,
    ).eval()
    assert info.params == count_parameters(model)
    body = model.backbone.body
    backbone_flops = count_flops(body, torch.zeros(1, 3, SIZE, SIZE)).total

    pixels = _level_pixels(SIZE)  # P3..P7
    p3_to_p5 = pixels[:3]
    in_channels = [body.out_channels[n] for n in ("C3", "C4", "C5")]
    lateral = sum(2 * hw * cin * c for hw, cin in zip(p3_to_p5, in_channels))
    if attention:
        # Each SASA layer: q, k, v 1x1 projections (3·2·C·C per pixel) + q·k, q·r, a·v over 7x7 (3·2·49·C),
        # both at the layer's input resolution; P6 attends on P5's grid, P7 on P6's.
        def sasa(hw):
            return hw * (3 * 2 * c * c + 3 * 2 * 49 * c)

        outputs = sum(sasa(hw) for hw in p3_to_p5) + sasa(pixels[2]) + sasa(pixels[3])
        towers = 2 * 4 * sum(sasa(hw) for hw in pixels)
        predictors = sum(2 * hw * c * (a * k + a * 4) for hw in pixels)
    else:
        conv3x3 = 2 * 9 * c * c
        outputs = sum(hw * conv3x3 for hw in p3_to_p5) + (pixels[3] + pixels[4]) * conv3x3
        towers = 2 * 4 * sum(hw * conv3x3 for hw in pixels)
        predictors = sum(2 * hw * 9 * c * (a * k + a * 4) for hw in pixels)
    assert info.flops.total == backbone_flops + lateral + outputs + towers + predictors


def test_paper_rows_build_the_intended_models():
    names = [row.name for row in PAPER_DETECTORS]
    assert names == [
        "retinanet_resnet50",
        "retinanet_sasa_resnet50_convstem",
        "retinanet_sasa_resnet50",
        "retinanet_sasa_resnet50_attention_fpn_heads",
    ]
    full = PAPER_DETECTORS[-1]
    assert full.build_kwargs == {"backbone": "sasa_resnet50", "fpn": "attention", "head": "attention"}
    assert (full.params_m, full.flops_b) == (22.0, 110.0)


@pytest.mark.slow
def test_paper_detector_table_runs_at_paper_size():
    table = paper_detector_table()
    for row in PAPER_DETECTORS:
        assert row.name in table
    assert "33.4" in table and "22.0" in table
