"""ResNet backbone: feature shapes, gradients, determinism, torchvision compatibility, freezing, options."""

import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from sasa_det.backbones import FEATURE_NAMES, AAOptions, build_backbone, list_backbones, load_backbone_weights
from sasa_det.layers import AugmentedConv2d, LocalSelfAttention2d, SpatiallyAwareStem

STRIDES = {"C2": 4, "C3": 8, "C4": 16, "C5": 32}


@pytest.mark.parametrize("name", list_backbones())
def test_every_preset_gives_ceil_sized_features_for_odd_inputs(name):
    torch.manual_seed(0)
    # narrow copy of the preset (same blocks, ops and strides, cheap on CPU); SASA needs 8 heads x 2 channels
    base = 16 if name.startswith("sasa") else 8
    height, width = 41, 27
    backbone = build_backbone(name, base_width=base, image_size=height).eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, height, width))
    assert list(features) == list(FEATURE_NAMES)
    for index, (key, value) in enumerate(features.items()):
        stride = STRIDES[key]
        expected = (2, base * 4 * 2**index, math.ceil(height / stride), math.ceil(width / stride))
        assert value.shape == expected, key
        assert backbone.out_channels[key] == value.shape[1]
        assert backbone.strides[key] == stride
        assert torch.isfinite(value).all()


def test_full_width_channels_and_tiny_input():
    backbone = build_backbone("resnet50").eval()
    assert backbone.out_channels == {"C2": 256, "C3": 512, "C4": 1024, "C5": 2048}
    assert backbone.strides == STRIDES
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 5, 3))
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(2, 1), (1, 1), (1, 1), (1, 1)]


def test_spatial_op_per_stage_and_stem_types():
    backbone = build_backbone("resnet26", base_width=16, stage_ops=("conv", "sasa", "aa", "conv"), stem="attention")
    assert isinstance(backbone.stem, SpatiallyAwareStem) and not hasattr(backbone, "conv1")
    assert type(backbone.layer1[0].conv2) is nn.Conv2d
    assert all(isinstance(b.conv2, LocalSelfAttention2d) for b in backbone.layer2)
    assert all(isinstance(b.conv2, AugmentedConv2d) for b in backbone.layer3)
    assert type(backbone.layer4[0].conv2) is nn.Conv2d
    # the stride sits on the 3x3 (conv2) of the first block of stages 2-4 and on the shortcut
    assert backbone.layer2[0].conv2.stride == 2 and backbone.layer2[0].downsample[0].stride == (2, 2)
    assert backbone.layer4[0].conv2.stride == (2, 2) and backbone.layer2[1].conv2.stride == 1
    assert backbone.layer1[0].conv1.stride == (1, 1)


def test_aa_presets_place_one_augmented_conv_per_block_in_the_last_three_stages():
    backbone = build_backbone("aa_resnet50")
    assert all(type(b.conv2) is nn.Conv2d for b in backbone.layer1)
    for stage in (backbone.layer2, backbone.layer3, backbone.layer4):
        assert all(isinstance(b.conv2, AugmentedConv2d) for b in stage)
        assert all(isinstance(b.bn2, nn.BatchNorm2d) for b in stage)  # AA Sec. 3.3: BN after the augmented conv


def test_aa_relative_tables_follow_image_size_and_pooling():
    backbone = build_backbone("aa_resnet50", base_width=16, image_size=640, aa=AAOptions(pool_attention_stages=(2,)))
    # attention map side per stage: ceil(640 / stride), halved again where the attention is pooled
    assert backbone.layer2[1].conv2.max_size == (40, 40) and backbone.layer2[1].conv2.pool_attention
    assert backbone.layer3[1].conv2.max_size == (40, 40) and not backbone.layer3[1].conv2.pool_attention
    assert backbone.layer4[0].conv2.max_size == (20, 20)
    assert backbone.layer3[0].conv2.rel_width.shape[0] == 2 * 40 - 1
    with torch.no_grad():
        features = backbone.eval()(torch.randn(1, 3, 37, 29))
    assert features["C3"].shape == (1, 128, 5, 4) and features["C5"].shape == (1, 512, 2, 1)


def test_out_features_subset_builds_only_needed_stages():
    backbone = build_backbone("resnet26", base_width=16, out_features=("C4", "C3"))
    assert backbone.out_features == ("C3", "C4")
    assert not hasattr(backbone, "layer4")
    features = backbone(torch.randn(1, 3, 32, 32))
    assert list(features) == ["C3", "C4"]
    assert backbone.out_channels == {"C3": 128, "C4": 256}


MIXES = {
    "conv": {"name": "resnet26"},
    "sasa": {"name": "sasa_resnet26_convstem"},
    "aa": {"name": "aa_resnet50", "blocks_per_stage": (1, 1, 1, 1), "image_size": 37},
    "attention_stem": {"name": "resnet26", "stem": "attention", "stage_ops": ("sasa", "aa", "conv", "sasa")},
}


@pytest.mark.parametrize("mix", list(MIXES))
def test_gradient_reaches_every_parameter(mix):
    torch.manual_seed(0)
    kwargs = dict(MIXES[mix])
    backbone = build_backbone(kwargs.pop("name"), base_width=16, **kwargs).train()
    features = backbone(torch.randn(2, 3, 37, 29))
    loss = sum(f.square().mean() for f in features.values())
    loss.backward()
    for name, param in backbone.named_parameters():
        assert param.grad is not None, f"{name} gets no gradient (DDP would fail on unused parameters)"
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"{name} gets an all-zero gradient"


@pytest.mark.parametrize("mix", list(MIXES))
def test_eval_forward_is_deterministic(mix):
    torch.manual_seed(0)
    kwargs = dict(MIXES[mix])
    backbone = build_backbone(kwargs.pop("name"), base_width=16, **kwargs).eval()
    x = torch.randn(2, 3, 37, 29)
    with torch.no_grad():
        first = backbone(x)
        second = backbone(x)
        single = backbone(x[1:])
    for key in first:
        assert torch.equal(first[key], second[key]), key
        torch.testing.assert_close(single[key], first[key][1:], rtol=1e-4, atol=1e-5)


def _randomize_torchvision(model: nn.Module) -> None:
    """Random weights and BN statistics, so that a wrong mapping cannot pass by accident."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


@pytest.mark.parametrize("norm", ["bn", "frozen_bn"])
def test_torchvision_resnet50_weights_load_by_name_with_identical_outputs(norm):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None)
    _randomize_torchvision(reference)
    reference.eval().double()  # float64: frozen BN folds its statistics differently, rounding must not matter
    backbone = build_backbone("resnet50", norm=norm).eval()
    missing, unexpected = load_backbone_weights(backbone, reference.state_dict())
    backbone.double()
    assert missing == []
    assert sorted(unexpected) == ["fc.bias", "fc.weight"]
    x = torch.randn(1, 3, 61, 47, dtype=torch.float64)
    with torch.no_grad():
        ours = backbone(x)
        y = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        for key, stage in zip(FEATURE_NAMES, (reference.layer1, reference.layer2, reference.layer3, reference.layer4)):
            y = stage(y)
            torch.testing.assert_close(ours[key], y, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("frozen", [0, 1, 2, 4])
def test_frozen_stages_freeze_stem_and_first_stages_and_keep_their_bn_in_eval(frozen):
    torch.manual_seed(0)
    backbone = build_backbone("resnet26", base_width=16, frozen_stages=frozen)
    backbone.train()
    frozen_prefixes = ("conv1.", "bn1.") + tuple(f"layer{i}." for i in range(1, frozen + 1)) if frozen else ()
    for name, param in backbone.named_parameters():
        assert param.requires_grad == (not name.startswith(frozen_prefixes)), name
    for name, module in backbone.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.training == (not (name + ".").startswith(frozen_prefixes)), name
    before = {n: b.clone() for n, b in backbone.named_buffers() if n.endswith("running_mean")}
    backbone(torch.randn(2, 3, 32, 32))
    for name, value in backbone.named_buffers():
        if name.endswith("running_mean"):
            changed = not torch.equal(value, before[name])
            assert changed == (not name.startswith(frozen_prefixes)), name


def test_frozen_attention_stem():
    backbone = build_backbone("sasa_resnet26", base_width=16, frozen_stages=1).train()
    assert all(not p.requires_grad for p in backbone.stem.parameters())
    assert all(not p.requires_grad for p in backbone.layer1.parameters())
    assert all(p.requires_grad for p in backbone.layer2.parameters())
    assert not backbone.stem.training and not backbone.layer1.training and backbone.layer2.training


def test_frozen_bn_norm_has_no_batchnorm_and_no_norm_parameters():
    bn = build_backbone("resnet26", base_width=16)
    frozen = build_backbone("resnet26", base_width=16, norm="frozen_bn")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    norm_params = sum(p.numel() for m in bn.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert sum(p.numel() for p in frozen.parameters()) == sum(p.numel() for p in bn.parameters()) - norm_params


def test_frozen_bn_reaches_the_attention_stem():
    backbone = build_backbone("sasa_resnet26", base_width=16, norm="frozen_bn")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    with torch.no_grad():
        features = backbone.train()(torch.randn(1, 3, 21, 19))
    assert features["C2"].shape == (1, 64, 6, 5)


def test_zero_init_residual_and_default_init():
    plain = build_backbone("resnet26", base_width=16)
    zero = build_backbone("resnet26", base_width=16, zero_init_residual=True)
    for stage in zero.stages():
        for block in stage:
            assert torch.count_nonzero(block.bn3.weight) == 0
            assert torch.all(block.bn2.weight == 1)
    assert all(torch.all(b.bn3.weight == 1) for s in plain.stages() for b in s)
    # He-normal fan-out: std = sqrt(2 / (out_channels * k * k))
    weight = plain.layer3[0].conv2.weight
    expected = math.sqrt(2.0 / (weight.shape[0] * 9))
    assert abs(weight.std().item() - expected) / expected < 0.1


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"stage_ops": ("conv", "sasa")}, "one operation per stage"),
        ({"stage_ops": "attention"}, "unknown stage operation"),
        ({"stem": "patchify"}, "unknown stem"),
        ({"norm": "gn"}, "unknown norm"),
        ({"frozen_stages": 5}, "frozen_stages"),
        ({"out_features": ("C6",)}, "out_features"),
        ({"blocks_per_stage": (1, 2, 3)}, "blocks_per_stage"),
        ({"aa": AAOptions(pool_attention_stages=(5,))}, "aa.pool_attention_stages"),
    ],
)
def test_bad_arguments_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_backbone("resnet26", base_width=16, **overrides)


def test_forward_rejects_non_batched_input():
    with pytest.raises(ValueError, match="NCHW"):
        build_backbone("resnet26", base_width=16)(torch.randn(3, 32, 32))
