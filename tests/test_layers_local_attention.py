"""LocalSelfAttention2d (SASA): every implementation against the dense reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sasa_det.layers import LocalSelfAttention2d, available_local_attention_impls, resolve_local_attention_impl
from sasa_det.layers.local_attention import cpu as local_attention_cpu
from sasa_det.layers.local_attention import registry as local_attention_registry
from sasa_det.layers.local_attention.cpu import cpp_extension_available, local_attention_cpp
from sasa_det.layers.local_attention.torch_paths import (
    local_attention_halo,
    local_attention_shifted,
    local_attention_unfold,
)
from sasa_det.layers.reference import local_attention_reference

needs_cpp = pytest.mark.skipif(not cpp_extension_available(), reason="the SASA C++ extension cannot be built here")
FAST_IMPLS = ["shift", "unfold", "halo", pytest.param("cpp", marks=needs_cpp)]
SIZES = [(1, 1), (1, 5), (2, 3), (3, 1), (5, 7), (6, 4)]


def make_layer(dtype=torch.float64, **kwargs) -> LocalSelfAttention2d:
    kwargs = {"in_channels": 5, "out_channels": 8, "kernel_size": 3, "heads": 2, **kwargs}
    layer = LocalSelfAttention2d(**kwargs).to(dtype)
    with torch.no_grad():  # the default init is small; make the relative logits matter
        layer.rel_row.normal_()
        layer.rel_col.normal_()
    return layer


def forward_and_grads(layer: LocalSelfAttention2d, x: torch.Tensor, impl: str):
    layer.impl = impl
    x = x.detach().clone().requires_grad_()
    out = layer(x)
    loss = (out * torch.cos(out)).sum()  # a non-linear loss gives non-uniform output gradients
    grads = torch.autograd.grad(loss, [x, *layer.parameters()])
    return out, grads


def max_error(first, second) -> float:
    out_a, grads_a = first
    out_b, grads_b = second
    errors = [(out_a - out_b).abs().max().item()]
    errors += [(a - b).abs().max().item() for a, b in zip(grads_a, grads_b)]
    return max(errors)


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mask_padding", [False, True])
def test_matches_reference_float64(impl, size, stride, mask_padding):
    torch.manual_seed(0)
    layer = make_layer(stride=stride, mask_padding=mask_padding, scaled=(size[0] % 2 == 0))
    x = torch.randn(2, 5, *size, dtype=torch.float64)
    result = forward_and_grads(layer, x, impl)
    expected = forward_and_grads(layer, x, "reference")
    assert result[0].shape == (2, 8, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    assert max_error(result, expected) <= 1e-9


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("mask_padding", [False, True])
def test_kernel7_on_map_smaller_than_window(impl, mask_padding):
    torch.manual_seed(1)
    layer = make_layer(kernel_size=7, heads=2, out_channels=12, mask_padding=mask_padding)
    x = torch.randn(1, 5, 4, 9, dtype=torch.float64)
    assert max_error(forward_and_grads(layer, x, impl), forward_and_grads(layer, x, "reference")) <= 1e-9


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("scaled", [False, True])
def test_matches_reference_float32(impl, scaled):
    torch.manual_seed(2)
    layer64 = make_layer(kernel_size=5, scaled=scaled, stride=2, out_channels=16, heads=4)
    layer32 = make_layer(torch.float32, kernel_size=5, scaled=scaled, stride=2, out_channels=16, heads=4)
    layer32.load_state_dict(layer64.state_dict())
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64)
    out32, grads32 = forward_and_grads(layer32, x.float(), impl)
    expected = forward_and_grads(layer64, x, "reference")
    assert max_error((out32.double(), [g.double() for g in grads32]), expected) <= 1e-4


def test_default_impl_is_the_fast_path():
    layer = LocalSelfAttention2d(16, 16)
    assert layer.impl == "auto"
    expected = "cpp" if cpp_extension_available() else "shift"
    assert resolve_local_attention_impl("auto", torch.zeros(1)).name == expected


def test_auto_falls_back_to_shift_without_the_extension(monkeypatch):
    monkeypatch.setattr(local_attention_cpu, "_extension", None)
    monkeypatch.setattr(local_attention_cpu, "_failure", "no compiler")
    assert resolve_local_attention_impl("auto", torch.zeros(1)).name == "shift"
    with pytest.raises(ValueError, match="does not support"):
        resolve_local_attention_impl("cpp", torch.zeros(1))


def test_auto_prefers_a_registered_fused_impl(monkeypatch):
    calls = []

    def fused(q, k, v, rel_row, rel_col, kernel_size, mask_padding):
        calls.append(q.shape)
        return local_attention_shifted(q, k, v, rel_row, rel_col, kernel_size, mask_padding)

    impl = local_attention_registry.LocalAttentionImpl("triton", fused, lambda q: q.dtype == torch.float64)
    monkeypatch.setitem(local_attention_registry._REGISTRY, "triton", impl)
    layer = make_layer()
    layer(torch.randn(1, 5, 4, 4, dtype=torch.float64))
    assert len(calls) == 1
    # a float32 input is not supported by the plug-in: auto falls back to the CPU paths
    assert resolve_local_attention_impl("auto", torch.zeros(1)).name in {"cpp", "shift"}
    with pytest.raises(ValueError, match="does not support"):
        resolve_local_attention_impl("triton", torch.zeros(1))


@pytest.mark.parametrize(
    "fn, shape, kernel_size",
    [
        (local_attention_shifted, (1, 2, 4, 3, 4), 3),
        pytest.param(local_attention_cpp, (2, 2, 6, 4, 5), 5, marks=needs_cpp),  # head width 6: not vector-sized
    ],
)
def test_gradcheck_kernel(fn, shape, kernel_size):
    torch.manual_seed(3)
    tensors = [torch.randn(shape, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    rel = [torch.randn(kernel_size, shape[2] // 2, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    for mask_padding in (False, True):
        assert torch.autograd.gradcheck(
            lambda q, k, v, r, c, m=mask_padding: fn(q, k, v, r, c, kernel_size, m), (*tensors, *rel)
        )


@needs_cpp
@pytest.mark.parametrize("size", [(5, 1), (4, 2), (1, 3), (6, 3)])
@pytest.mark.parametrize("mask_padding", [False, True])
def test_cpp_kernel_on_maps_narrower_than_the_window_radius(size, mask_padding):
    # a window wider than the map: the in-image key ranges of many offsets are empty
    torch.manual_seed(sum(size))
    q, k, v = (torch.randn(2, 2, 4, *size, dtype=torch.float64, requires_grad=True) for _ in range(3))
    rel = [torch.randn(7, 2, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    grad = torch.randn(2, 2, 4, *size, dtype=torch.float64)
    results = []
    for fn in (local_attention_cpp, local_attention_reference):
        out = fn(q, k, v, *rel, 7, mask_padding)
        results.append((out, torch.autograd.grad((out * grad).sum(), [q, k, v, *rel])))
    assert max_error(*results) <= 1e-9


@needs_cpp
@pytest.mark.parametrize("kernel_size", [1, 3, 7])
@pytest.mark.parametrize("mask_padding", [False, True])
def test_cpp_kernel_matches_reference_on_rectangular_maps(kernel_size, mask_padding):
    torch.manual_seed(kernel_size)
    q, k, v = (torch.randn(2, 3, 4, 5, 9, dtype=torch.float64, requires_grad=True) for _ in range(3))
    rel = [torch.randn(kernel_size, 2, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    grad = torch.randn(2, 3, 4, 5, 9, dtype=torch.float64)
    results = []
    for fn in (local_attention_cpp, local_attention_reference):
        out = fn(q, k, v, *rel, kernel_size, mask_padding)
        results.append((out, torch.autograd.grad((out * grad).sum(), [q, k, v, *rel])))
    assert max_error(*results) <= 1e-9


def test_gradcheck_halo_kernel_with_several_blocks():
    torch.manual_seed(3)
    shape = (1, 2, 4, 3, 5)  # blocks of 2: padded to 4×6, 2×3 blocks
    tensors = [torch.randn(shape, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    rel = [torch.randn(3, 2, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    for mask_padding in (False, True):
        assert torch.autograd.gradcheck(
            lambda q, k, v, r, c, m=mask_padding: local_attention_halo(q, k, v, r, c, 3, m, block_size=2),
            (*tensors, *rel),
        )


@pytest.mark.parametrize("block_size", [1, 2, 3, 4])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("mask_padding", [False, True])
def test_halo_block_sizes_match_reference(block_size, kernel_size, mask_padding):
    """Several blocks, maps not a multiple of the block, windows wider than a block."""
    torch.manual_seed(9)
    for size in [(1, 1), (1, 5), (3, 1), (7, 9)]:
        tensors = [torch.randn(2, 2, 4, *size, dtype=torch.float64, requires_grad=True) for _ in range(3)]
        rel = [torch.randn(kernel_size, 2, dtype=torch.float64, requires_grad=True) for _ in range(2)]
        args = (*tensors, *rel, kernel_size, mask_padding)
        out = local_attention_halo(*args, block_size=block_size)
        expected = local_attention_reference(*args)
        grad_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, [*tensors, *rel], grad_out)
        expected_grads = torch.autograd.grad(expected, [*tensors, *rel], grad_out)
        assert (out - expected).abs().max().item() <= 1e-9
        assert max((a - b).abs().max().item() for a, b in zip(grads, expected_grads)) <= 1e-9


def test_halo_rejects_bad_block_size():
    q = torch.zeros(1, 1, 2, 3, 3)
    rel = torch.zeros(3, 1)
    with pytest.raises(ValueError, match="block_size"):
        local_attention_halo(q, q, q, rel, rel, 3, False, block_size=0)


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_gradcheck_layer(impl):
    torch.manual_seed(4)
    layer = make_layer(stride=2, impl=impl)
    x = torch.randn(1, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_translation_equivariant_away_from_borders(impl):
    torch.manual_seed(5)
    layer = make_layer(kernel_size=5, impl=impl)
    radius = 2
    x = torch.randn(1, 5, 14, 15, dtype=torch.float64)
    shift_y, shift_x = 2, 3
    shifted = torch.roll(x, shifts=(shift_y, shift_x), dims=(2, 3))
    out, out_shifted = layer(x), layer(shifted)
    # positions whose window lies inside the image both before and after the shift
    rows = slice(radius, 14 - radius - shift_y)
    cols = slice(radius, 15 - radius - shift_x)
    rows_shifted = slice(radius + shift_y, 14 - radius)
    cols_shifted = slice(radius + shift_x, 15 - radius)
    torch.testing.assert_close(out[..., rows, cols], out_shifted[..., rows_shifted, cols_shifted], rtol=0, atol=1e-12)


def test_single_pixel_with_masking_returns_its_value():
    layer = make_layer(mask_padding=True)
    x = torch.randn(2, 5, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer.value(x))


def test_relative_halves_are_per_head():
    """Row embedding meets the first half of every head, column embedding the second half."""
    torch.manual_seed(6)
    q = torch.randn(1, 2, 4, 3, 3, dtype=torch.float64)
    k = torch.zeros_like(q)
    v = torch.randn_like(q)
    rel_row = torch.randn(3, 2, dtype=torch.float64)
    rel_col = torch.randn(3, 2, dtype=torch.float64)
    out = local_attention_shifted(q, k, v, rel_row, rel_col, 3, False)
    # brute force for the centre pixel of head 1
    logits, values = [], []
    vp = F.pad(v, (1, 1, 1, 1))
    for a in range(3):
        for b in range(3):
            logits.append(q[0, 1, :2, 1, 1] @ rel_row[a] + q[0, 1, 2:, 1, 1] @ rel_col[b])
            values.append(vp[0, 1, :, 1 + a, 1 + b])
    expected = (torch.stack(logits).softmax(0)[:, None] * torch.stack(values)).sum(0)
    torch.testing.assert_close(out[0, 1, :, 1, 1], expected)


def test_parameter_names_and_shapes():
    layer = LocalSelfAttention2d(32, 64)  # paper defaults: k=7, 8 heads
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes == {
        "query.weight": (64, 32, 1, 1),
        "key.weight": (64, 32, 1, 1),
        "value.weight": (64, 32, 1, 1),
        "rel_row": (7, 4),
        "rel_col": (7, 4),
    }


def _logit_spreads(layer: LocalSelfAttention2d, x: torch.Tensor) -> tuple[float, float]:
    """Std of the content logits ``q_i·k_j`` and of the relative logits ``q_row·rel_row[a] + q_col·rel_col[b]``
    over every query, key and window offset of ``x``, computed from the projections by hand."""
    heads, d = layer.heads, layer.head_channels
    q = layer.query(x).reshape(heads, d, -1)  # (heads, d, HW)
    k = layer.key(x).reshape(heads, d, -1)
    content = torch.einsum("hdi,hdj->hij", q, k)
    rows = torch.einsum("hdi,ad->hia", q[:, : d // 2], layer.rel_row)  # (heads, HW, k)
    cols = torch.einsum("hdi,bd->hib", q[:, d // 2 :], layer.rel_col)
    relative = rows[..., :, None] + cols[..., None, :]
    return content.std().item(), relative.std().item()


@torch.no_grad()
def test_relative_logits_start_as_wide_as_the_content_logits():
    # unit-variance input (what the attention pyramid's and heads' LayerNorm feed): content logits have variance
    # d; the default tables N(0, 1) give the relative logits the same, the AA paper's N(0, 1/d) sqrt(d) less
    ratios = {}
    for rel_init in ("content_scale", "inv_sqrt_d"):
        per_seed = []
        for seed in range(8):
            torch.manual_seed(seed)
            layer = LocalSelfAttention2d(64, 64, rel_init=rel_init)  # d = 8
            content, relative = _logit_spreads(layer, torch.randn(1, 64, 12, 12))
            per_seed.append(content / relative)
        ratios[rel_init] = sum(per_seed) / len(per_seed)
    assert 0.8 < ratios["content_scale"] < 1.25, ratios
    assert 0.8 * math.sqrt(8) < ratios["inv_sqrt_d"] < 1.25 * math.sqrt(8), ratios
    assert LocalSelfAttention2d(8, 16).rel_init == "content_scale"  # the default


def test_attention_flops():
    layer = LocalSelfAttention2d(64, 64, stride=2)
    assert layer.attention_flops(56, 56) == 3 * 2 * 56 * 56 * 49 * 64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"out_channels": 12, "heads": 8}, "divisible by heads"),
        ({"out_channels": 24, "heads": 8}, "must be even"),
        ({"kernel_size": 4}, "odd"),
        ({"stride": 0}, "stride"),
        ({"impl": "magic"}, "unknown impl"),
        ({"rel_init": "zeros"}, "unknown rel_init 'zeros'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LocalSelfAttention2d(**{"in_channels": 8, "out_channels": 16, **kwargs})


def test_bad_input_shape():
    with pytest.raises(ValueError, match="expected input"):
        LocalSelfAttention2d(8, 16)(torch.zeros(1, 3, 4, 4))


def test_listed_impls():
    assert {"auto", "reference", "unfold", "shift", "halo"} <= set(available_local_attention_impls())


def test_unfold_and_reference_functions_agree_directly():
    torch.manual_seed(7)
    q, k, v = (torch.randn(2, 1, 2, 3, 5, dtype=torch.float64) for _ in range(3))
    rel_row, rel_col = torch.randn(3, 1, dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)
    torch.testing.assert_close(
        local_attention_unfold(q, k, v, rel_row, rel_col, 3, False),
        local_attention_reference(q, k, v, rel_row, rel_col, 3, False),
    )


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_channels_last_input_and_bfloat16_autocast(impl):
    torch.manual_seed(8)
    layer = make_layer(torch.float32, stride=2, impl=impl)
    x = torch.randn(2, 5, 6, 7)
    expected = layer(x)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    out.float().sum().backward()
    assert out.shape == expected.shape
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters())
