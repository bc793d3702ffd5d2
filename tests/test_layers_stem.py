"""SpatiallyAwareStem: block attention with value mixtures against the explicit-loop reference."""

from __future__ import annotations

import math

import pytest
import torch

from sasa_det.layers import SpatiallyAwareStem
from sasa_det.layers.reference import spatially_aware_stem_reference

SIZES = [(1, 1), (2, 7), (3, 5), (4, 4), (8, 12), (9, 6)]


def forward_and_grads(fn, stem, x):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    loss = (out * torch.cos(out)).sum()
    return out, torch.autograd.grad(loss, [x, *stem.parameters()])


def max_error(first, second) -> float:
    errors = [(first[0] - second[0]).abs().max().item()]
    errors += [(a - b).abs().max().item() for a, b in zip(first[1], second[1])]
    return max(errors)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("train", [True, False])
def test_matches_reference_float64(size, train):
    torch.manual_seed(0)
    stem = SpatiallyAwareStem(3, 8, heads=2).double().train(train)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    result = forward_and_grads(stem, stem, x)
    expected = forward_and_grads(lambda t: spatially_aware_stem_reference(stem, t), stem, x)
    assert result[0].shape == (2, 8, math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    assert max_error(result, expected) <= 1e-9


def test_matches_reference_float32_other_window_and_mixtures():
    torch.manual_seed(1)
    stem64 = SpatiallyAwareStem(3, 12, heads=3, mixtures=2, window=3, pool=2).double()
    stem32 = SpatiallyAwareStem(3, 12, heads=3, mixtures=2, window=3, pool=2)
    stem32.load_state_dict(stem64.state_dict())
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    out32, grads32 = forward_and_grads(stem32, stem32, x.float())
    expected = forward_and_grads(lambda t: spatially_aware_stem_reference(stem64, t), stem64, x)
    assert out32.shape == (2, 12, 4, 4)
    assert max_error((out32.double(), [g.double() for g in grads32]), expected) <= 1e-4


def test_mixture_weights_are_a_distribution_per_position():
    stem = SpatiallyAwareStem()
    p = stem.mixture_weights()
    assert p.shape == (4, 4, 4)
    torch.testing.assert_close(p.sum(0), torch.ones(4, 4))


def test_attention_stays_inside_blocks():
    """Changing one block of the input leaves the attention output of every other block unchanged."""
    torch.manual_seed(2)
    stem = SpatiallyAwareStem(3, 8, heads=2).double()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    changed = x.clone()
    changed[..., :4, :4] += 1.0
    out, out_changed = stem.attention(x), stem.attention(changed)
    torch.testing.assert_close(out[..., 4:, :], out_changed[..., 4:, :])
    torch.testing.assert_close(out[..., :4, 4:], out_changed[..., :4, 4:])
    assert not torch.allclose(out[..., :4, :4], out_changed[..., :4, :4])


def test_gradcheck():
    torch.manual_seed(3)
    stem = SpatiallyAwareStem(2, 4, heads=2, mixtures=2).double().eval()
    with torch.no_grad():
        stem.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(stem, (x,))


def test_parameter_names():
    names = {name for name, _ in SpatiallyAwareStem().named_parameters()}
    assert names == {
        "query.weight",
        "key.weight",
        "value.weight",
        "pos_emb_row",
        "pos_emb_col",
        "pos_emb_mixture",
        "bn.weight",
        "bn.bias",
    }


def test_attention_flops():
    stem = SpatiallyAwareStem()
    length = 224 * 224
    expected = 2 * length * 4 * 64 + 2 * 2 * length * 16 * 64 + 2 * 16 * 4 * 64
    assert stem.attention_flops(224, 224) == expected
    assert stem.attention_flops(5, 5) == stem.attention_flops(8, 8)  # counted on the padded map


@pytest.mark.parametrize(
    "kwargs, match",
    [({"out_channels": 10, "heads": 4}, "divisible"), ({"mixtures": 0}, "mixtures"), ({"window": 0}, "window")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpatiallyAwareStem(**kwargs)


def test_bad_input_shape():
    with pytest.raises(ValueError, match="expected input"):
        SpatiallyAwareStem()(torch.zeros(1, 1, 8, 8))


def _spy_on_sdpa(monkeypatch) -> list[tuple[int, ...]]:
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(q, *args, **kwargs):
        calls.append(tuple(q.shape))
        return original(q, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("size", [(1024, 1024), (800, 1344), (1030, 1030)])
def test_no_sdpa_call_exceeds_the_cuda_grid_limit(monkeypatch, size):
    # shapes only: the meta device computes nothing, so COCO-sized images cost no time
    from sasa_det.layers.spatially_aware_stem import SDPA_GRID_LIMIT

    calls = _spy_on_sdpa(monkeypatch)
    stem = SpatiallyAwareStem(3, 64).to("meta")
    out = stem(torch.empty(2, 3, *size, device="meta"))
    assert out.shape == (2, 64, math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    blocks = math.ceil(size[0] / 4) * math.ceil(size[1] / 4)
    assert blocks > SDPA_GRID_LIMIT  # these sizes would overflow a single call
    assert len(calls) >= 2
    assert all(shape[0] <= SDPA_GRID_LIMIT and shape[1] <= SDPA_GRID_LIMIT for shape in calls), calls
    assert sum(shape[1] for shape in calls) == blocks  # every block attended exactly once


def test_chunked_block_attention_equals_one_call(monkeypatch):
    from sasa_det.layers import spatially_aware_stem

    torch.manual_seed(3)
    stem = SpatiallyAwareStem(3, 8, heads=2).double()
    x = torch.randn(3, 3, 13, 18, dtype=torch.float64)  # 4×5 blocks per image, 6 (N·heads) planes, padding
    whole = forward_and_grads(stem, stem, x)
    calls = _spy_on_sdpa(monkeypatch)
    monkeypatch.setattr(spatially_aware_stem, "SDPA_GRID_LIMIT", 4)
    chunked = forward_and_grads(stem, stem, x)
    assert len(calls) == 2 * 5 and all(shape[0] <= 4 and shape[1] <= 4 for shape in calls)
    assert max_error(chunked, whole) <= 1e-12
    expected = forward_and_grads(lambda t: spatially_aware_stem_reference(stem, t), stem, x)
    assert max_error(chunked, expected) <= 1e-9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("size", [(1024, 1024), (800, 1344)])
def test_cuda_at_coco_sizes_matches_cpu(size):
    torch.manual_seed(4)
    stem = SpatiallyAwareStem(3, 64).eval()
    x = torch.randn(1, 3, *size)
    expected = stem(x)
    result = stem.cuda()(x.cuda()).cpu()
    assert (result - expected).abs().max().item() <= 1e-4 * (expected.abs().max().item() + 1)
