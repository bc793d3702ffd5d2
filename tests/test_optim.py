"""Optimizer parameter groups and per-step learning-rate schedules against hand-computed values."""

import math

import pytest
import torch
from torch import nn

from sasa_det.optim import build_optimizer, build_scheduler


class _Toy(nn.Module):
    """A module with one parameter of every kind the weight-decay rule distinguishes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)  # weight 4-D (decay), bias 1-D (no decay)
        self.bn = nn.BatchNorm2d(4)  # weight, bias 1-D (no decay)
        self.rel_row = nn.Parameter(torch.zeros(7, 4))  # 2-D but relative embedding (no decay)
        self.pos_emb_col = nn.Parameter(torch.zeros(4, 8))  # 2-D but position embedding (no decay)
        self.fc = nn.Linear(4, 2)  # weight 2-D (decay)
        self.frozen = nn.Linear(2, 2)
        for p in self.frozen.parameters():
            p.requires_grad_(False)

    def no_weight_decay(self):
        return {"rel_row", "pos_emb_col"}


def _ids(params):
    return {id(p) for p in params}


def test_parameter_groups_follow_decay_rule_and_skip_frozen():
    model = _Toy()
    opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4)
    groups = {g["name"]: g for g in opt.param_groups}
    assert _ids(groups["decay"]["params"]) == _ids([model.conv.weight, model.fc.weight])
    assert groups["decay"]["weight_decay"] == pytest.approx(1e-4)
    expected_no_decay = [
        model.conv.bias,
        model.bn.weight,
        model.bn.bias,
        model.rel_row,
        model.pos_emb_col,
        model.fc.bias,
    ]
    assert _ids(groups["no_decay"]["params"]) == _ids(expected_no_decay)
    assert groups["no_decay"]["weight_decay"] == 0.0
    all_ids = _ids(p for g in opt.param_groups for p in g["params"])
    assert not all_ids & _ids(model.frozen.parameters())


def test_attention_layers_declare_their_embeddings_exempt():
    from sasa_det.backbones import AAOptions, build_backbone
    from sasa_det.optim import no_weight_decay_names

    net = build_backbone("sasa_resnet26", base_width=16, stage_ops=["sasa", "sasa", "aa", "aa"], aa=AAOptions(heads=2))
    exempt = no_weight_decay_names(net)
    two_d = {name for name, p in net.named_parameters() if p.ndim > 1}
    expected = {
        name
        for name in two_d
        if any(part in name for part in ("rel_row", "rel_col", "rel_width", "rel_height", "pos_emb"))
    }
    assert expected and exempt == expected  # every embedding, nothing else
    opt = build_optimizer(net, "sgd", lr=0.1, weight_decay=1e-4)
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    params = dict(net.named_parameters())
    assert all(id(params[name]) in no_decay for name in expected)


def test_backbone_lr_multiplier_groups_and_schedule():
    model = nn.Sequential(_Toy(), nn.Linear(2, 2))
    opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4, backbone=model[0], backbone_lr_mult=0.1)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"decay", "no_decay", "backbone_decay", "backbone_no_decay"}
    assert groups["backbone_decay"]["lr"] == pytest.approx(0.01) and groups["decay"]["lr"] == pytest.approx(0.1)
    assert _ids(groups["decay"]["params"]) == _ids([model[1].weight])
    scheduler = build_scheduler(opt, "constant", total_steps=10, warmup_steps=2, warmup_factor=0.5)
    assert groups["backbone_decay"]["lr"] == pytest.approx(0.005)  # warm-up scales each group from its own rate
    scheduler.step(), scheduler.step()
    assert groups["backbone_decay"]["lr"] == pytest.approx(0.01) and groups["decay"]["lr"] == pytest.approx(0.1)


def test_linear_scaling_rule():
    from sasa_det.optim import OptimSettings, scaled_lr

    assert scaled_lr(OptimSettings(lr=0.02), 64) == pytest.approx(0.02)
    assert scaled_lr(OptimSettings(lr=0.02, reference_batch_size=16), 64) == pytest.approx(0.08)
    assert scaled_lr(OptimSettings(lr=0.02, reference_batch_size=16), 4) == pytest.approx(0.005)


def test_sgd_nesterov_and_adamw_settings():
    model = _Toy()
    sgd = build_optimizer(model, "sgd", lr=0.2, momentum=0.8, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] is True and sgd.defaults["momentum"] == 0.8 and sgd.defaults["lr"] == 0.2
    adamw = build_optimizer(model, "AdamW", lr=1e-3, betas=(0.8, 0.9), weight_decay=0.05)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["betas"] == (0.8, 0.9)
    assert {g["weight_decay"] for g in adamw.param_groups} == {0.05, 0.0}


def test_no_decay_parameter_really_does_not_decay():
    # With zero gradient, SGD's L2 decay moves decayed weights and leaves the others untouched.
    model = _Toy()
    nn.init.ones_(model.rel_row)
    opt = build_optimizer(model, "sgd", lr=1.0, momentum=0.0, weight_decay=0.5)
    before_fc = model.fc.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(model.rel_row.detach(), torch.ones(7, 4))
    torch.testing.assert_close(model.fc.weight.detach(), before_fc * 0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "rmsprop"}, "unknown optimizer"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"momentum": 0.0, "nesterov": True}, "Nesterov"),
    ],
)
def test_optimizer_bad_arguments(kwargs, message):
    args = {"name": "sgd", "lr": 0.1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_optimizer(_Toy(), **args)


def test_optimizer_rejects_fully_frozen_model():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        build_optimizer(model, lr=0.1)


def _lrs(name, steps, base_lr=1.0, **kwargs):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = build_scheduler(opt, name, **kwargs)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_warmup_matches_hand_values():
    # base 0.12, warm-up 4 steps from factor 0.25, cosine over the remaining 8 steps.
    lrs = _lrs("cosine", 13, base_lr=0.12, total_steps=12, warmup_steps=4, warmup_factor=0.25)
    expected_warm = [0.12 * (0.25 + 0.75 * s / 4) for s in range(4)]  # 0.03, 0.0525, 0.075, 0.0975
    assert lrs[:4] == pytest.approx([0.03, 0.0525, 0.075, 0.0975])
    assert lrs[:4] == pytest.approx(expected_warm)
    assert lrs[4] == pytest.approx(0.12)  # peak exactly when the warm-up ends
    assert lrs[6] == pytest.approx(0.12 * 0.5 * (1 + math.cos(math.pi * 2 / 8)))  # 0.10243
    assert lrs[8] == pytest.approx(0.06)  # half-way through the cosine
    assert lrs[12] == pytest.approx(0.0, abs=1e-12)  # reaches 0 at total_steps


def test_multistep_with_warmup_matches_hand_values():
    lrs = _lrs(
        "multistep", 10, base_lr=1.0, total_steps=10, warmup_steps=2, warmup_factor=0.5, milestones=(5, 8), gamma=0.1
    )
    assert lrs == pytest.approx([0.5, 0.75, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_constant_without_warmup():
    assert _lrs("constant", 5, base_lr=0.3, total_steps=5) == pytest.approx([0.3] * 5)


def test_scheduler_scales_every_group():
    model = _Toy()
    opt = build_optimizer(model, "sgd", lr=0.2)
    sched = build_scheduler(opt, "constant", total_steps=3, warmup_steps=2, warmup_factor=0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.1])
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.15, 0.15])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "poly"}, "unknown schedule"),
        ({"total_steps": 0}, "total_steps"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"warmup_factor": 1.5}, "warmup_factor"),
        ({"name": "multistep", "milestones": (8, 5)}, "milestones"),
    ],
)
def test_scheduler_bad_arguments(kwargs, message):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    args = {"name": "cosine", "total_steps": 10}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_scheduler(opt, **args)
