"""AugmentedConv2d (AA): fast path against the explicit reference, relative logits by brute force."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sasa_det.layers import AugmentedConv2d
from sasa_det.layers.reference import augmented_conv_reference
from sasa_det.layers.relative_flex_attention import flex_attention_available
from sasa_det.layers.relative_position import (
    rel_to_abs,
    relative_logits_1d,
    relative_logits_2d,
    slice_relative_table,
)

SIZES = [(1, 1), (1, 4), (3, 1), (2, 3), (5, 7), (6, 4)]


def make_layer(dtype=torch.float64, **kwargs) -> AugmentedConv2d:
    kwargs = {"in_channels": 5, "out_channels": 16, "heads": 2, "max_size": (8, 8), **kwargs}
    layer = AugmentedConv2d(**kwargs).to(dtype)
    if layer.relative:
        with torch.no_grad():
            layer.rel_width.normal_()
            layer.rel_height.normal_()
    return layer


def forward_and_grads(fn, layer, x):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    loss = (out * torch.cos(out)).sum()
    return out, torch.autograd.grad(loss, [x, *layer.parameters()])


def max_error(first, second) -> float:
    errors = [(first[0] - second[0]).abs().max().item()]
    errors += [(a - b).abs().max().item() for a, b in zip(first[1], second[1])]
    return max(errors)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("stride, pool_attention", [(1, False), (2, False), (1, True), (2, True)])
@pytest.mark.parametrize("relative", [True, False])
def test_matches_reference_float64(size, stride, pool_attention, relative):
    torch.manual_seed(0)
    layer = make_layer(stride=stride, pool_attention=pool_attention, relative=relative)
    x = torch.randn(2, 5, *size, dtype=torch.float64)
    result = forward_and_grads(layer, layer, x)
    expected = forward_and_grads(lambda t: augmented_conv_reference(layer, t), layer, x)
    assert result[0].shape == (2, 16, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    assert max_error(result, expected) <= 1e-9


@pytest.mark.parametrize("stride, pool_attention", [(1, False), (1, True), (2, False)])
def test_matches_reference_float32(stride, pool_attention):
    torch.manual_seed(1)
    layer64 = make_layer(stride=stride, pool_attention=pool_attention, out_channels=32, heads=4)
    layer32 = make_layer(torch.float32, stride=stride, pool_attention=pool_attention, out_channels=32, heads=4)
    layer32.load_state_dict(layer64.state_dict())
    x = torch.randn(2, 5, 7, 5, dtype=torch.float64)
    out32, grads32 = forward_and_grads(layer32, layer32, x.float())
    expected = forward_and_grads(lambda t: augmented_conv_reference(layer64, t), layer64, x)
    assert max_error((out32.double(), [g.double() for g in grads32]), expected) <= 1e-4


def test_relative_logits_equal_brute_force_for_every_pair():
    torch.manual_seed(2)
    height, width, d = 3, 5, 4
    q = torch.randn(2, height, width, d, dtype=torch.float64)
    rel_width = torch.randn(2 * width - 1, d, dtype=torch.float64)
    rel_height = torch.randn(2 * height - 1, d, dtype=torch.float64)
    logits = relative_logits_2d(q, rel_width, rel_height)
    assert logits.shape == (2, height * width, height * width)
    for b in range(2):
        for yi in range(height):
            for xi in range(width):
                for yj in range(height):
                    for xj in range(width):
                        embedding = rel_width[xj - xi + width - 1] + rel_height[yj - yi + height - 1]
                        expected = q[b, yi, xi] @ embedding
                        assert abs(logits[b, yi * width + xi, yj * width + xj] - expected) < 1e-12


def test_layer_relative_logits_use_centre_of_larger_tables():
    torch.manual_seed(3)
    layer = make_layer(max_size=(6, 9))
    height, width, dkh = 4, 3, layer.dk // layer.heads
    q = torch.randn(1, layer.heads, height, width, dkh, dtype=torch.float64)
    logits = layer.relative_logits(q)
    for h in range(layer.heads):
        for i in range(height * width):
            for j in range(height * width):
                yi, xi, yj, xj = i // width, i % width, j // width, j % width
                embedding = layer.rel_width[8 + xj - xi] + layer.rel_height[5 + yj - yi]  # offset 0 at M-1
                assert abs(logits[0, h, i, j] - q[0, h, yi, xi] @ embedding) < 1e-12


def test_rel_to_abs_indexing():
    x = torch.randn(3, 4, 7)
    out = rel_to_abs(x)
    for i in range(4):
        for j in range(4):
            assert torch.equal(out[:, i, j], x[:, i, j - i + 3])
    q, table = torch.randn(2, 3, 4, 5), torch.randn(7, 5)
    expected = torch.stack([torch.stack([q[..., i, :] @ table[j - i + 3] for j in range(4)], -1) for i in range(4)], -2)
    torch.testing.assert_close(relative_logits_1d(q, table), expected)


def test_table_resampled_beyond_max_size():
    table = torch.randn(5, 3)  # built for length 3
    assert torch.equal(slice_relative_table(table, 2), table[1:4])
    assert torch.equal(slice_relative_table(table, 3), table)
    larger = slice_relative_table(table, 5)
    assert larger.shape == (9, 3)
    torch.testing.assert_close(larger[[0, 2, 4, 6, 8]], table)  # learned entries stay on the grid
    torch.testing.assert_close(larger[1], (table[0] + table[1]) / 2)
    layer = make_layer(max_size=(2, 3))
    assert layer(torch.randn(1, 5, 6, 7, dtype=torch.float64)).shape == (1, 16, 6, 7)


def test_zero_relative_tables_equal_scaled_dot_product_attention():
    torch.manual_seed(4)
    layer = make_layer(out_channels=32, heads=4)
    with torch.no_grad():
        layer.rel_width.zero_()
        layer.rel_height.zero_()
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    n, heads, dk, dv = 2, layer.heads, layer.dk, layer.dv
    q, k, v = torch.split(layer.qkv(x), [dk, dk, dv], dim=1)

    def split_heads(t):
        return t.reshape(n, heads, -1, 24).transpose(2, 3)

    attended = F.scaled_dot_product_attention(split_heads(q), split_heads(k), split_heads(v))
    merged = attended.transpose(2, 3).reshape(n, dv, 4, 6)
    torch.testing.assert_close(layer.attention(x), layer.attention_output(merged), rtol=0, atol=1e-12)


def test_gradcheck():
    torch.manual_seed(5)
    for stride, pool_attention in ((1, False), (2, False), (1, True)):
        layer = make_layer(out_channels=8, heads=2, stride=stride, pool_attention=pool_attention)
        x = torch.randn(1, 5, 3, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(layer, (x,))


def test_channel_counts_and_parameter_names():
    layer = AugmentedConv2d(128, 128, max_size=(14, 10))  # κ=0.2, υ=0.1 -> 25.6, 12.8 rounded to 8s
    assert (layer.dk, layer.dv) == (24, 16)
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes == {
        "rel_width": (19, 3),
        "rel_height": (27, 3),
        "conv.weight": (112, 128, 3, 3),
        "qkv.weight": (64, 128, 1, 1),
        "attention_output.weight": (16, 16, 1, 1),
    }
    explicit = AugmentedConv2d(64, 64, heads=4, dk=8, dv=12, relative=False)
    assert (explicit.dk, explicit.dv) == (8, 12)
    assert explicit.rel_width is None


def test_attention_flops():
    layer = AugmentedConv2d(64, 64, heads=8)  # dk=16, dv=8
    length = 14 * 10
    expected = 2 * length * length * (16 + 8) + 2 * length * (19 + 27) * 16
    assert layer.attention_flops(14, 10) == expected
    pooled = AugmentedConv2d(64, 64, heads=8, pool_attention=True, relative=False)
    assert pooled.attention_flops(14, 10) == 2 * 35 * 35 * 24


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dk": 10, "heads": 4}, "dk=10"),
        ({"dv": 6, "heads": 4}, "dv=6"),
        ({"dv_ratio": 1.0}, "no channels"),
        ({"stride": 3}, "stride"),
        ({"kernel_size": 2}, "odd"),
        ({"attention_impl": "xformers"}, "attention_impl"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AugmentedConv2d(**{"in_channels": 16, "out_channels": 32, **kwargs})


def test_bad_input_shape():
    with pytest.raises(ValueError, match="expected input"):
        AugmentedConv2d(8, 16)(torch.zeros(1, 3, 4, 4))


needs_flex = pytest.mark.skipif(not flex_attention_available(), reason="this torch has no FlexAttention")


@needs_flex
@pytest.mark.filterwarnings("ignore::UserWarning")  # FlexAttention warns when it runs uncompiled (CPU)
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (6, 4)])
@pytest.mark.parametrize("stride, pool_attention", [(1, False), (2, False), (1, True)])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_flex_attention_forward_matches_reference(size, stride, pool_attention, dtype, tolerance):
    torch.manual_seed(4)
    layer = make_layer(stride=stride, pool_attention=pool_attention, attention_impl="flex")
    x = torch.randn(2, 5, *size, dtype=torch.float64)
    with torch.no_grad():  # torch runs FlexAttention's backward on GPUs only
        expected = augmented_conv_reference(layer, x)
        result = layer.to(dtype)(x.to(dtype))
    assert result.dtype == dtype
    assert (result.double() - expected).abs().max().item() <= tolerance


def test_auto_uses_sdpa_on_cpu_and_keeps_gradients():
    layer = make_layer(torch.float32)
    assert layer.attention_impl == "auto" and not layer._uses_flex(torch.zeros(1), torch.zeros(1))
    layer(torch.randn(1, 5, 4, 4)).sum().backward()
    assert layer.rel_width.grad is not None


@needs_flex
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention's backward runs on GPUs only")
def test_flex_attention_forward_and_backward_on_cuda_match_sdpa():
    torch.manual_seed(6)
    flex = make_layer(torch.float32, out_channels=64, heads=4, max_size=(16, 16), attention_impl="flex").cuda()
    sdpa = make_layer(torch.float32, out_channels=64, heads=4, max_size=(16, 16), attention_impl="sdpa").cuda()
    sdpa.load_state_dict(flex.state_dict())
    x = torch.randn(2, 5, 13, 16, device="cuda")
    result = forward_and_grads(flex, flex, x)
    expected = forward_and_grads(sdpa, sdpa, x)
    assert max_error(result, expected) <= 1e-3


# the head widths of AA's presets: (d_k/N_h, d_v/N_h) at C = 128, 256, 512
PRESET_WIDTHS = [(3, 2), (6, 3), (13, 6)]


def dense_scores(score_mod, batch: int, heads: int, length: int) -> torch.Tensor:
    """``score_mod(0, b, h, i, j)`` for every index, ``(batch, heads, L, L)`` (as FlexAttention's reference does)."""
    index = [
        torch.arange(size).view(*([1] * axis), size, *([1] * (3 - axis)))
        for axis, size in enumerate((batch, heads, length, length))
    ]
    return score_mod(torch.zeros(()), *index)


@needs_flex
@pytest.mark.parametrize("dkh, dvh", PRESET_WIDTHS)
def test_what_flex_gets_equals_dense_sdpa_forward_and_backward(dkh, dvh):
    from sasa_det.layers.relative_flex_attention import flex_inputs

    torch.manual_seed(dkh)
    height, width, heads = 5, 7, 2
    q, k = (torch.randn(2, heads, height * width, dkh, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(2, heads, height * width, dvh, dtype=torch.float64, requires_grad=True)
    rel_w = torch.randn(2 * width - 1, dkh, dtype=torch.float64, requires_grad=True)
    rel_h = torch.randn(2 * height - 1, dkh, dtype=torch.float64, requires_grad=True)
    leaves = [q, k, v, rel_w, rel_h]
    grad = torch.randn(2, heads, height * width, dvh, dtype=torch.float64)

    q_pad, k_pad, v_pad, score_mod = flex_inputs(q, k, v, rel_w, rel_h, height, width)
    assert q_pad.shape[-1] == k_pad.shape[-1] == v_pad.shape[-1] == 16  # >= 16, a power of two
    bias = dense_scores(score_mod, 2, heads, height * width)
    out = F.scaled_dot_product_attention(q_pad, k_pad, v_pad, attn_mask=bias, scale=1.0)[..., :dvh]
    result = [out, *torch.autograd.grad((out * grad).sum(), leaves)]

    mask = relative_logits_2d(q.reshape(2 * heads, height, width, dkh), rel_w, rel_h).view(2, heads, height * width, -1)
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
    expected = [dense, *torch.autograd.grad((dense * grad).sum(), leaves)]
    assert max((a - b).abs().max().item() for a, b in zip(result, expected)) <= 1e-10


@needs_flex
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("dkh, dvh", PRESET_WIDTHS)
def test_flex_forward_at_preset_widths_matches_reference_and_gets_padded_widths(monkeypatch, dkh, dvh):
    import torch.nn.attention.flex_attention as flex_module

    widths = []
    original = flex_module.flex_attention

    def spy(q, k, v, **kwargs):
        widths.append((q.shape[-1], k.shape[-1], v.shape[-1]))
        return original(q, k, v, **kwargs)

    monkeypatch.setattr(flex_module, "flex_attention", spy)
    torch.manual_seed(5)
    heads = 4
    layer = make_layer(out_channels=64, heads=heads, dk=dkh * heads, dv=dvh * heads, attention_impl="flex")
    x = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        result = layer(x)
        expected = augmented_conv_reference(layer, x)
    assert widths == [(16, 16, 16)] and layer.attention_path == "flex"
    assert (result - expected).abs().max().item() <= 1e-9


@needs_flex
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_multiscale_training_and_validation_compile_flex_at_most_twice():
    from torch._dynamo.utils import counters

    from sasa_det.layers.relative_flex_attention import compiled_flex_attention, relative_attention_flex

    torch._dynamo.reset()
    counters.clear()
    attend = compiled_flex_attention("eager")  # Dynamo's graph capture without Inductor: counts compiles on CPU
    torch.manual_seed(8)

    def run(height, width):
        q, k = (torch.randn(1, 2, height * width, 13) for _ in range(2))
        v = torch.randn(1, 2, height * width, 6)
        tables = torch.randn(2 * width - 1, 13), torch.randn(2 * height - 1, 13)
        return relative_attention_flex(q, k, v, *tables, height, width, attend=attend)

    # eleven multi-scale sizes, then validation without gradients at two sizes
    for side in range(4, 26, 2):
        assert run(side, side + 3).shape == (1, 2, side * (side + 3), 6)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])  # one graph for every training size
    with torch.no_grad():
        run(9, 12)
        run(15, 11)
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    torch._dynamo.reset()


def test_flex_probe_failure_falls_back_to_sdpa_once_with_a_warning(monkeypatch, caplog):
    from sasa_det.layers import augmented_conv, relative_flex_attention

    def broken(*args, **kwargs):
        raise RuntimeError("NYI: embedding dimension of the query, key, and value must be at least 16")

    monkeypatch.setattr(relative_flex_attention, "_probes", {})
    monkeypatch.setattr(relative_flex_attention, "relative_attention_flex", broken)
    monkeypatch.setattr(augmented_conv, "flex_attention_available", lambda: True)
    q = torch.zeros(1, 2, 4, 3)
    with caplog.at_level("WARNING"):
        assert not relative_flex_attention.flex_attention_usable(q, torch.zeros(1, 2, 4, 2))
        assert not relative_flex_attention.flex_attention_usable(q, torch.zeros(1, 2, 4, 2))
    warnings = [record for record in caplog.records if "FlexAttention cannot run" in record.getMessage()]
    assert len(warnings) == 1 and "dense (N, heads, HW, HW) mask" in warnings[0].getMessage()
    assert "must be at least 16" in warnings[0].getMessage()
    report = relative_flex_attention.flex_attention_report()
    assert report == [
        {
            "device": "cpu",
            "dtype": "torch.float32",
            "d_k": 16,
            "d_v": 16,
            "grad": True,
            "deterministic": False,
            "usable": False,
            "error": "RuntimeError: NYI: embedding dimension of the query, key, and value must be at least 16",
        }
    ]


class _CudaLike:
    """Shape, dtype and device of a CUDA query, without a GPU (the decision reads nothing else)."""

    def __init__(self, *shape):
        self.shape, self.dtype, self.device, self.is_cuda = shape, torch.float32, torch.device("cuda"), True


@pytest.fixture
def deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def test_deterministic_runs_send_relative_attention_to_sdpa_not_flex(monkeypatch, caplog, deterministic):
    from sasa_det.layers import augmented_conv, relative_flex_attention

    probes = []
    monkeypatch.setattr(relative_flex_attention, "_probes", {})
    monkeypatch.setattr(relative_flex_attention, "relative_attention_flex", lambda *a, **k: probes.append(a))
    monkeypatch.setattr(augmented_conv, "flex_attention_available", lambda: True)
    q, v = _CudaLike(1, 2, 4, 3), _CudaLike(1, 2, 4, 2)
    layer = make_layer(out_channels=32, heads=2, dk=6, dv=4)
    with caplog.at_level("WARNING"):
        assert not layer._uses_flex(q, v)  # "auto": SDPA, without even probing FlexAttention
        assert not layer._uses_flex(q, v)
    assert probes == []
    warnings = [r.getMessage() for r in caplog.records if "atomic adds" in r.getMessage()]
    assert len(warnings) == 1 and "deterministic algorithms are on" in warnings[0]
    with torch.no_grad():  # inference has no backward: FlexAttention may serve it
        assert relative_flex_attention.nondeterministic_backward(q) is None
    layer.attention_impl = "flex"
    with pytest.raises(RuntimeError, match="attention_impl='flex'.*deterministic algorithms are on"):
        layer._uses_flex(q, v)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pooled_aa_under_deterministic_algorithms_on_cuda_repeats_bit_for_bit(deterministic):
    torch.manual_seed(0)
    layer = AugmentedConv2d(16, 64, heads=4, max_size=(32, 32), pool_attention=True).cuda()
    x = torch.randn(2, 16, 30, 26, device="cuda", requires_grad=True)
    grads = []
    for _ in range(2):
        out = layer(x)
        grads.append(torch.autograd.grad(out.square().sum(), [x, *layer.parameters()]))
    assert layer.attention_path == "sdpa"
    assert all(torch.equal(a, b) for a, b in zip(*grads))
