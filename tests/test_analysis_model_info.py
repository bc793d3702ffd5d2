"""Parameter and FLOP counting: hand-computed toy models, the attention hooks, and the papers' tables."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from sasa_det.analysis.model_info import PAPER_VALUES, count_flops, count_parameters, format_table, measure_backbone
from sasa_det.layers import LocalSelfAttention2d


class _ToyAttention(nn.Module):
    """A stand-in attention layer: a matmul the counter must NOT count, and a known attention_flops."""

    def forward(self, x):
        flat = x.flatten(2)  # [N, C, HW]
        return (flat.transpose(1, 2) @ flat).sum() * 0 + x

    def attention_flops(self, height, width):
        return 1000 * height + width


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.attention = _ToyAttention()
        self.fc = nn.Linear(8, 5)
        self.fc_shared = nn.Linear(5, 5, bias=False)

    def forward(self, x):
        y = self.attention(self.conv(x))
        y = self.attention(y[..., :3, :])  # called twice, second time on a cropped map
        logits = self.fc(y.mean(dim=(2, 3)))
        return self.fc_shared(self.fc_shared(logits))  # a shared layer used twice


def test_toy_model_counts_against_hand_computation():
    model = _Toy()
    flops = count_flops(model, torch.randn(2, 3, 10, 13), attention_types=(_ToyAttention,))
    # conv output 5x7; per output element 3*3*3 multiply-adds; 8 channels; batch 2
    assert flops.conv == 2 * (2 * 8 * 5 * 7 * 27)
    # Linear 8->5 once and 5->5 twice, batch 2
    assert flops.linear == 2 * (2 * 8 * 5) + 2 * 2 * (2 * 5 * 5)
    # attention_flops at the input sizes seen: 5x7 then 3x7, per image
    assert flops.attention == 2 * (1000 * 5 + 7) + 2 * (1000 * 3 + 7)
    assert flops.total == flops.conv + flops.linear + flops.attention
    assert count_parameters(model) == 8 * 27 + 8 + 8 * 5 + 5 + 25


def test_hooks_are_removed_after_counting():
    model = _Toy()
    count_flops(model, torch.randn(1, 3, 8, 8), attention_types=(_ToyAttention,))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_sasa_layer_counts_projections_as_convolutions_and_the_rest_from_the_layer():
    layer = LocalSelfAttention2d(16, 16, kernel_size=3, heads=2).eval()
    flops = count_flops(layer, torch.randn(3, 16, 6, 5))
    assert flops.conv == 3 * 3 * (2 * 16 * 16 * 6 * 5)  # q, k, v 1x1 projections, batch 3
    assert flops.attention == 3 * layer.attention_flops(6, 5)
    assert flops.linear == 0


def test_resnet50_matches_the_paper():
    info = measure_backbone("resnet50")
    assert info.params == 25_557_032  # torchvision's ResNet-50
    assert abs(info.flops.total / 1e9 - 8.2) / 8.2 < 0.05
    assert info.flops.attention == 0
    assert info.flops.linear == 2 * 2048 * 1000


def test_table_formats_paper_columns():
    info = measure_backbone("resnet26", image_size=64)
    assert info.paper_params_m is None  # the paper's values are for 224 only
    text = format_table([measure_backbone("resnet26")], markdown=True)
    assert text.splitlines()[0].startswith("| model | params (M) | paper |")
    assert "| resnet26 | 13.70 | 13.7 |" in text


def test_tool_prints_a_table(capsys):
    spec = importlib.util.spec_from_file_location(
        "model_info_tool", Path(__file__).parents[1] / "tools" / "model_info.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["resnet26", "--image-size", "64"]) == 0
    assert "resnet26" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        tool.main(["resnet18"])


def test_tool_measures_the_model_a_config_builds(capsys):
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.tasks import get_task
    from tests.helpers import DEMO_CONFIG, REPO, load_tool

    tool = load_tool("model_info")
    assert tool.main([str(DEMO_CONFIG), "model.backbone.base_width=8"]) == 0
    printed = capsys.readouterr().out
    # the reference: the demo's detector built as training builds it, with the same override
    cfg = load_config(DEMO_CONFIG, ["model.backbone.base_width=8"])
    model = get_task("detection").build_module(cfg).model
    assert f"shapes_demo (retinanet, 3 classes)  {count_parameters(model) / 1e6:.2f}" in printed
    assert "image 128x128" in printed  # the demo's evaluation size
    # a config that leaves the classes to the training data is measured with one, and says so
    assert tool.main([str(REPO / "configs" / "custom" / "retinanet_small_cpu.yaml"), "--image-size", "64"]) == 0
    printed = capsys.readouterr().out
    assert "(retinanet, 1 class)" in printed and "image 64x64" in printed
    assert "model.num_classes is null" in printed and "model.num_classes=K" in printed
    # a typo in an override is one error line
    assert tool.main([str(DEMO_CONFIG), "model.fpn_chanels=32"]) == 2
    assert "did you mean 'fpn_channels'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, (_, f) in PAPER_VALUES.items() if f is not None])
def test_flops_and_params_match_the_papers_tables(name):
    info = measure_backbone(name)
    paper_params, paper_flops = PAPER_VALUES[name]
    assert abs(info.params / 1e6 - paper_params) <= 0.1
    assert abs(info.flops.total / 1e9 - paper_flops) / paper_flops <= 0.05
