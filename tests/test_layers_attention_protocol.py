"""The attention-layer protocol: every layer of the package implements it, and a layer written here, added to
``STAGE_OPS`` and nowhere else, is counted by the FLOP counter, drawn by the attention maps, switched by the
export and resized by weight loading."""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sasa_det.analysis.attention_maps import compute_attention_map
from sasa_det.analysis.model_info import count_flops
from sasa_det.backbones import build_backbone, load_backbone_weights
from sasa_det.backbones.presets import STAGE_OPS, STEMS
from sasa_det.detectors.build import DetectorOptions, build_detector
from sasa_det.engine.inference.export import export_detector
from sasa_det.layers import AugmentedConv2d, LocalSelfAttention2d, SpatiallyAwareStem
from sasa_det.layers.attention_layer import AttentionLayer, QueryAttention, attention_layers, attribute_set_to
from sasa_det.layers.export_paths import portable_attention_paths

TINY = {"base_width": 8, "blocks_per_stage": (1, 1, 1, 1)}


class ToyColumnAttention(nn.Module):
    """One-head global attention with a learned bias per key column (a table as long as the map is wide).

    ``impl="fast"`` refuses to be traced (as a custom kernel would); ``"explicit"`` is its portable path. A map
    of another width reads the table at the nearest column, and a table of another length is loaded the same way.
    """

    attention_kind = "toy"
    heads = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, width: int = 4) -> None:
        super().__init__()
        self.out_channels, self.stride, self.impl = out_channels, stride, "fast"
        self.qkv = nn.Conv2d(in_channels, 3 * out_channels, 1, bias=False)
        self.column_bias = nn.Parameter(torch.randn(width))

    @staticmethod
    def _nearest(table: Tensor, length: int) -> Tensor:
        return table[torch.arange(length) * table.shape[0] // length]

    def _logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, HW, HW)`` logits and the values ``(N, HW, C)``."""
        q, k, v = self.qkv(x).flatten(2).chunk(3, dim=1)
        bias = self._nearest(self.column_bias, x.shape[-1]).repeat(x.shape[-2])
        return q.transpose(1, 2) @ k * self.out_channels**-0.5 + bias, v.transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        if self.impl == "fast" and torch.jit.is_tracing():
            raise RuntimeError("the fast path cannot be recorded")
        logits, v = self._logits(x)
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(x.shape[0], -1, *x.shape[-2:])
        return F.avg_pool2d(out, self.stride, ceil_mode=True) if self.stride > 1 else out

    def attention_flops(self, height: int, width: int) -> int:
        return 2 * 2 * (height * width) ** 2 * self.out_channels

    def attention_map_size(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def attention_weights(self, x: Tensor, row: int, col: int) -> QueryAttention:
        logits, _ = self._logits(x)
        return QueryAttention(logits[0, row * x.shape[-1] + col].softmax(-1).reshape(1, *x.shape[-2:]), None)

    def portable_path(self) -> AbstractContextManager[str]:
        return attribute_set_to(self, "impl", "explicit")

    def resize_position_table(self, name: str, table: Tensor) -> Tensor | None:
        return self._nearest(table, self.column_bias.shape[0]) if name == "column_bias" else None


@pytest.fixture
def toy_stage_op(monkeypatch):
    """``stage_ops: [..., toy]``: the toy's table as wide as the stage-4 map at ``image_size`` (stride 16)."""
    monkeypatch.setitem(
        STAGE_OPS, "toy", lambda options, sasa, stage, image_size: partial(ToyColumnAttention, width=image_size // 16)
    )


def _toy_backbone(image_size: int, **kwargs) -> nn.Module:
    ops = ["conv", "conv", "conv", "toy"]
    return build_backbone("resnet26", stage_ops=ops, image_size=image_size, **TINY, **kwargs).eval()


@pytest.mark.parametrize(
    "layer",
    [
        LocalSelfAttention2d(8, 8, kernel_size=3, heads=2, impl="shift"),
        AugmentedConv2d(8, 16, dk=8, dv=8, heads=2, max_size=(6, 6)),
        AugmentedConv2d(8, 16, dk=8, dv=8, heads=2, relative=False, pool_attention=True),
        SpatiallyAwareStem(8, 8, heads=2),
    ],
    ids=["sasa", "aa", "aa_pooled_no_relative", "stem"],
)
def test_each_layer_of_the_package_implements_the_protocol(layer):
    assert isinstance(layer, AttentionLayer)
    x = torch.randn(1, 8, 7, 6)
    height, width = layer.attention_map_size(7, 6)
    weights, outside = layer.attention_weights(x, height - 1, 0)
    assert weights.shape == (layer.heads, height, width) and (weights >= 0).all()
    total = weights.sum(dim=(1, 2)) + (0 if outside is None else outside)
    torch.testing.assert_close(total, torch.ones(layer.heads))
    assert layer.attention_flops(7, 6) > 0
    layer(x)

    def settings():
        return {k: v for k, v in vars(layer).items() if not k.startswith("_")}

    before = settings()
    with layer.portable_path() as path:
        assert isinstance(path, str) and path
        layer(x)  # runs on the portable path
    assert settings() == before
    assert layer.resize_position_table("no_such_table", torch.zeros(3, 4)) is None


def test_every_layer_the_backbone_tables_build_from_the_package_is_an_attention_layer():
    for op in STAGE_OPS:
        for stem in STEMS:
            backbone = build_backbone(
                "resnet26", stage_ops=[op] * 4, stem=stem, image_size=64, **{**TINY, "base_width": 16}
            )
            own = [m for m in backbone.modules() if type(m).__module__.startswith("sasa_det.layers")]
            assert all(isinstance(m, AttentionLayer) for m in own), (op, stem, {type(m) for m in own})


def test_a_new_layer_is_counted_by_the_flop_counter(toy_stage_op):
    backbone = _toy_backbone(64)
    (layer,) = attention_layers(backbone).values()
    assert isinstance(layer, ToyColumnAttention)
    flops = count_flops(backbone, torch.zeros(2, 3, 64, 64))
    # stage 4's first block attends at stride 16 (the stride is its pooling): a 4x4 map, 64 channels, 2 images
    assert flops.attention == 2 * (2 * 2 * 16**2 * 64)


def test_a_new_layer_is_drawn_and_exported(toy_stage_op, tmp_path):
    options = DetectorOptions(fpn_channels=64, min_size=64, max_size=64)
    torch.manual_seed(0)
    detector = build_detector(options, 3, _toy_backbone(64, out_features=options.backbone_features())).eval()
    name = "backbone.body.layer4.0.conv2"
    assert list(attention_layers(detector)) == [name]
    result = compute_attention_map(detector, torch.rand(3, 64, 64), name, (40, 20))
    assert result.grid_query == (2, 1) and result.stride == (16.0, 16.0)  # a 4x4 map at stride 16
    torch.testing.assert_close(result.grid_weights.sum(), torch.tensor(1.0))
    assert result.weights.shape == (1, 64, 64) and result.outside is None
    layer = detector.backbone.body.layer4[0].conv2
    with portable_attention_paths(detector) as paths:
        assert paths == {"toy": "explicit (1 layer)"} and layer.impl == "explicit"
    assert layer.impl == "fast"
    with pytest.raises(RuntimeError, match="cannot be recorded"):
        torch.jit.trace(layer, torch.randn(1, 64, 4, 4))
    assert export_detector(detector, tmp_path / "toy.pt", "torchscript", torch.rand(3, 64, 64)) == paths
    assert (tmp_path / "toy.pt").is_file() and layer.impl == "fast"


def test_a_new_layers_table_is_resized_when_weights_load(toy_stage_op):
    source, target = _toy_backbone(128), _toy_backbone(64)
    key = "layer4.0.conv2.column_bias"
    table = source.state_dict()[key]
    assert table.shape == (8,) and target.state_dict()[key].shape == (4,)
    assert load_backbone_weights(target, source.state_dict()) == ([], [])
    torch.testing.assert_close(target.state_dict()[key], table[[0, 2, 4, 6]], rtol=0, atol=0)
    loaded = target.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items() if k != key)
