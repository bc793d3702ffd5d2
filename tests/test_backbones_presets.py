"""Presets: parameter counts against the papers' tables and independent counts, builders' errors."""

import pytest
import torch
import torchvision

from sasa_det.backbones import PRESETS, build_backbone, build_classifier, list_backbones


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# SASA paper Table 1 and He et al. 2016 (millions, 1000-class head); acceptance: +-0.1 M.
PAPER_PARAMS_M = {
    "resnet26": 13.7,
    "resnet38": 19.6,
    "resnet50": 25.6,
    "resnet101": 44.5,
    "resnet152": 60.2,
    "sasa_resnet26": 10.3,
    "sasa_resnet38": 14.1,
    "sasa_resnet50": 18.0,
    "sasa_resnet26_convstem": 10.3,
    "sasa_resnet38_convstem": 14.1,
    "sasa_resnet50_convstem": 18.0,
}


def test_list_backbones_names_every_preset():
    names = list_backbones()
    assert names == list(PRESETS)
    expected = {f"resnet{d}" for d in (26, 38, 50, 101, 152)}
    expected |= {f"sasa_resnet{d}" for d in (26, 38, 50)} | {f"sasa_resnet{d}_convstem" for d in (26, 38, 50)}
    expected |= {f"aa_resnet{d}" for d in (50, 101, 152)}
    assert set(names) == expected


@pytest.mark.parametrize("name", list(PAPER_PARAMS_M))
def test_parameter_count_matches_the_paper(name):
    count = _params(build_classifier(name, num_classes=1000)) / 1e6
    assert abs(count - PAPER_PARAMS_M[name]) <= 0.1, f"{name}: {count:.3f} M vs paper {PAPER_PARAMS_M[name]} M"


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_conv_presets_have_exactly_torchvision_parameter_count(depth):
    ours = build_classifier(f"resnet{depth}", num_classes=1000)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert _params(ours) == _params(reference)


def _aa_block_change(width: int, kappa=0.2, upsilon=0.1, heads=8, side=None) -> int:
    """Closed-form parameter change of replacing a width->width 3x3 conv by an augmented conv.

    AA paper Sec. 3.3: qkv 1x1 conv F_in x (2 d_k + d_v), W^O d_v x d_v, the 3x3 conv loses d_v outputs;
    plus the relative tables (2W-1 + 2H-1) x d_kh. d_k, d_v rounded to the nearest multiple of heads.
    """
    dk = heads * max(1, round(kappa * width / heads))
    dv = heads * max(1, round(upsilon * width / heads))
    return width * (2 * dk + dv) + dv * dv - 9 * width * dv + 2 * (2 * side - 1) * (dk // heads)


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_aa_presets_match_the_closed_form_count(depth):
    blocks = PRESETS[f"aa_resnet{depth}"]["blocks_per_stage"]
    expected = _params(build_classifier(f"resnet{depth}"))
    for stage, (num_blocks, side) in enumerate(zip(blocks, (56, 28, 14, 7)), start=1):
        if stage >= 2:  # last three stages
            expected += num_blocks * _aa_block_change(64 * 2 ** (stage - 1), side=side)
    assert _params(build_classifier(f"aa_resnet{depth}")) == expected


def test_unknown_name_lists_valid_presets():
    with pytest.raises(ValueError, match="unknown backbone 'resnet18'.*resnet26"):
        build_backbone("resnet18")


def test_unknown_override_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown backbone override.*'depthh'.*frozen_stages"):
        build_backbone("resnet26", depthh=3)


def test_classifier_outputs_logits_and_keeps_backbone_names():
    model = build_classifier("resnet26", num_classes=7, base_width=8).eval()
    assert model(torch.randn(2, 3, 33, 41)).shape == (2, 7)
    keys = list(model.state_dict())
    assert "backbone.conv1.weight" in keys and "fc.weight" in keys
    assert "backbone.layer4.0.conv2.weight" in keys
    with pytest.raises(ValueError, match="out_features"):
        build_classifier("resnet26", out_features=("C4",))
