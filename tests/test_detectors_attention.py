"""The SASA paper's attention pyramid and RetinaNet heads against explicit step-by-step references."""

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from sasa_det.detectors import (
    AttentionFeaturePyramidNetwork,
    AttentionLastLevelP6P7,
    AttentionRetinaNetClassificationHead,
    AttentionRetinaNetHead,
    AttentionRetinaNetRegressionHead,
)
from sasa_det.layers import LocalSelfAttention2d


def _features(sizes=((13, 11), (7, 6), (4, 3)), channels=(8, 16, 24), batch=2):
    gen = torch.Generator().manual_seed(0)
    return OrderedDict(
        (f"C{3 + i}", torch.randn(batch, c, h, w, generator=gen)) for i, ((h, w), c) in enumerate(zip(sizes, channels))
    )


def test_attention_fpn_layers_are_sasa_with_paper_defaults():
    fpn = AttentionFeaturePyramidNetwork([8, 16, 24], 32, extra_blocks=AttentionLastLevelP6P7(32, 32))
    attention = [fpn.layer_blocks[i] for i in range(3)] + [fpn.extra_blocks.p6, fpn.extra_blocks.p7]
    assert all(isinstance(m, LocalSelfAttention2d) for m in attention)
    assert [(m.kernel_size, m.heads, m.stride) for m in attention] == [(7, 8, 1)] * 3 + [(7, 8, 2)] * 2
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) for m in fpn.modules())


def test_attention_fpn_matches_explicit_top_down_pathway():
    feats = _features()
    fpn = AttentionFeaturePyramidNetwork([8, 16, 24], 32, extra_blocks=AttentionLastLevelP6P7(32, 32)).eval()
    with torch.no_grad():
        out = fpn(feats)
        c3, c4, c5 = feats.values()
        lat = [fpn.inner_blocks[i](c) for i, c in enumerate((c3, c4, c5))]
        m5 = lat[2]
        m4 = lat[1] + F.interpolate(m5, size=c4.shape[-2:], mode="nearest")
        m3 = lat[0] + F.interpolate(m4, size=c3.shape[-2:], mode="nearest")
        p3, p4, p5 = (fpn.layer_blocks[i](m) for i, m in enumerate((m3, m4, m5)))
        p6 = fpn.extra_blocks.p6(p5)
        p7 = fpn.extra_blocks.p7(torch.relu(p6))
    assert list(out) == ["C3", "C4", "C5", "p6", "p7"]
    for got, want in zip(out.values(), (p3, p4, p5, p6, p7)):
        torch.testing.assert_close(got, want)
    assert [tuple(t.shape[-2:]) for t in out.values()] == [(13, 11), (7, 6), (4, 3), (2, 2), (1, 1)]
    assert all(t.shape[:2] == (2, 32) for t in out.values())


def test_attention_p6_from_c5_when_channels_differ():
    feats = _features()
    extra = AttentionLastLevelP6P7(24, 32)
    fpn = AttentionFeaturePyramidNetwork([8, 16, 24], 32, extra_blocks=extra)
    with torch.no_grad():
        out = fpn(feats)
        torch.testing.assert_close(out["p6"], extra.p6(feats["C5"]))


def test_attention_fpn_with_maxpool_level_for_rcnn():
    fpn = AttentionFeaturePyramidNetwork([8, 16, 24], 32, extra_blocks=LastLevelMaxPool())
    with torch.no_grad():
        out = fpn(_features())
    assert list(out) == ["C3", "C4", "C5", "pool"]
    assert out["pool"].shape[-2:] == (2, 2)


def _head_reference(tower: nn.Sequential, predictor: nn.Conv2d, x: torch.Tensor, outputs_per_anchor: int):
    """Tower, predictor, then the (N, A*K, H, W) -> (N, H*W*A, K) layout written out index by index."""
    y = x
    for block in tower:
        y = block[0](y)
        if len(block) == 3:
            y = block[1](y)
        y = torch.relu(y)
    y = predictor(y)
    n, _, h, w = y.shape
    anchors = y.shape[1] // outputs_per_anchor
    out = torch.empty(n, h * w * anchors, outputs_per_anchor)
    for i in range(h):
        for j in range(w):
            for a in range(anchors):
                out[:, (i * w + j) * anchors + a, :] = y[:, a * outputs_per_anchor : (a + 1) * outputs_per_anchor, i, j]
    return out


@pytest.mark.parametrize("norm", ["group", "none"])
def test_attention_head_outputs_match_explicit_reference_and_are_shared_across_levels(norm):
    torch.manual_seed(0)
    head = AttentionRetinaNetHead(32, num_anchors=3, num_classes=4, norm=norm, num_layers=2).eval()
    levels = [torch.randn(2, 32, 5, 4), torch.randn(2, 32, 3, 2)]
    with torch.no_grad():
        out = head(levels)
        cls_ref = torch.cat(
            [_head_reference(head.classification_head.conv, head.classification_head.cls_logits, x, 4) for x in levels],
            dim=1,
        )
        box_ref = torch.cat(
            [_head_reference(head.regression_head.conv, head.regression_head.bbox_reg, x, 4) for x in levels], dim=1
        )
        level0_alone = head(levels[:1])
    assert out["cls_logits"].shape == (2, (20 + 6) * 3, 4)
    assert out["bbox_regression"].shape == (2, (20 + 6) * 3, 4)
    torch.testing.assert_close(out["cls_logits"], cls_ref)
    torch.testing.assert_close(out["bbox_regression"], box_ref)
    torch.testing.assert_close(out["cls_logits"][:, : 20 * 3], level0_alone["cls_logits"])
    has_norm = any(isinstance(m, nn.GroupNorm) for m in head.modules())
    assert has_norm == (norm == "group")


@pytest.mark.parametrize("norm", ["group", "none"])
def test_attention_head_trains_with_and_without_its_norm(norm):
    # without the norm the ReLU reads the attention's output itself, which the kernels may return as a view made
    # inside their autograd Function: an in-place ReLU there fails in training (it did, with head_norm=none)
    torch.manual_seed(0)
    head = AttentionRetinaNetHead(32, num_anchors=3, num_classes=4, norm=norm, num_layers=2).train()
    levels = [torch.randn(2, 32, 5, 4, requires_grad=True), torch.randn(2, 32, 3, 2)]
    out = head(levels)
    (out["cls_logits"].sum() + out["bbox_regression"].sum()).backward()
    assert levels[0].grad is not None and torch.isfinite(levels[0].grad).all() and levels[0].grad.abs().sum() > 0


def test_attention_head_initialisation_follows_paper():
    torch.manual_seed(0)
    head = AttentionRetinaNetHead(256, num_anchors=9, num_classes=81)
    for sub in (head.classification_head, head.regression_head):
        attention = [m for m in sub.modules() if isinstance(m, LocalSelfAttention2d)]
        assert len(attention) == 4
        assert all((m.kernel_size, m.heads, m.out_channels, m.stride) == (7, 8, 256, 1) for m in attention)
        values = torch.cat([m.value.weight.flatten() for m in attention])
        assert values.std().item() == pytest.approx(0.01, rel=0.02)
        assert values.mean().abs().item() < 1e-3
    cls = head.classification_head.cls_logits
    box = head.regression_head.bbox_reg
    assert cls.kernel_size == (1, 1) and cls.out_channels == 9 * 81
    assert box.kernel_size == (1, 1) and box.out_channels == 9 * 4
    torch.testing.assert_close(cls.bias, torch.full_like(cls.bias, -math.log(0.99 / 0.01)))
    assert torch.sigmoid(cls.bias[0]).item() == pytest.approx(0.01)
    assert cls.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.count_nonzero(box.bias) == 0


def test_attention_head_losses_are_torchvisions():
    torch.manual_seed(0)
    head = AttentionRetinaNetHead(32, num_anchors=1, num_classes=3, num_layers=1)
    levels = [torch.randn(1, 32, 2, 2)]
    outputs = head(levels)
    anchors = [torch.tensor([[0.0, 0.0, 4.0, 4.0], [4.0, 0.0, 8.0, 4.0], [0.0, 4.0, 4.0, 8.0], [4.0, 4.0, 8.0, 8.0]])]
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]), "labels": torch.tensor([2])}]
    matched = [torch.tensor([0, -1, -1, -2])]  # anchor 0 foreground, 1-2 background, 3 ignored
    losses = head.compute_loss(targets, outputs, anchors, matched)
    logits = outputs["cls_logits"][0]
    target = torch.zeros_like(logits[:3])
    target[0, 2] = 1.0
    p = torch.sigmoid(logits[:3])
    ce = F.binary_cross_entropy_with_logits(logits[:3], target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    focal = ((0.25 * target + 0.75 * (1 - target)) * (1 - p_t) ** 2 * ce).sum()
    torch.testing.assert_close(losses["classification"], focal)
    assert losses["bbox_regression"].item() == pytest.approx(outputs["bbox_regression"][0, 0].abs().sum().item())


def test_attention_head_errors():
    with pytest.raises(ValueError, match="head norm"):
        AttentionRetinaNetClassificationHead(32, 9, 4, norm="batch")
    with pytest.raises(ValueError, match="divisible by 32"):
        AttentionRetinaNetRegressionHead(48, 9, norm="group")
    AttentionRetinaNetRegressionHead(48, 9, norm="none")  # fine without GroupNorm
