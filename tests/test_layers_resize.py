"""Bilinear resizing by matrices against F.interpolate, and its use under deterministic algorithms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sasa_det.layers import AugmentedConv2d
from sasa_det.layers.resize import bilinear_resize, bilinear_resize_matrices


@pytest.mark.parametrize(
    "size_in, size_out", [((4, 5), (7, 10)), ((1, 3), (2, 5)), ((6, 6), (11, 12)), ((5, 7), (5, 7))]
)
def test_matrices_equal_interpolate_forward_and_backward(size_in, size_out):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size_in, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 3, *size_out, dtype=torch.float64)
    expected = F.interpolate(x, size=size_out, mode="bilinear", align_corners=False)
    result = bilinear_resize_matrices(x, size_out)
    assert (result - expected).abs().max().item() <= 1e-12
    (expected_grad,) = torch.autograd.grad((expected * grad).sum(), x)
    (result_grad,) = torch.autograd.grad((result * grad).sum(), x)
    assert (result_grad - expected_grad).abs().max().item() <= 1e-12


def test_deterministic_mode_keeps_interpolate_on_cpu_and_the_layer_trains():
    layer = AugmentedConv2d(5, 16, heads=2, pool_attention=True, max_size=(4, 4)).double()
    x = torch.randn(1, 5, 7, 8, dtype=torch.float64)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.equal(
            bilinear_resize(x, (9, 9)), F.interpolate(x, size=(9, 9), mode="bilinear", align_corners=False)
        )
        layer(x).sum().backward()
    finally:
        torch.use_deterministic_algorithms(before)
    assert layer.qkv.weight.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pooled_attention_backward_runs_deterministically_on_cuda():
    torch.manual_seed(1)
    layer = AugmentedConv2d(8, 32, heads=4, pool_attention=True, max_size=(16, 16), attention_impl="sdpa").cuda()
    x = torch.randn(2, 8, 23, 30, device="cuda")
    grads = []
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(2):
            layer.zero_grad()
            layer(x).square().sum().backward()
            grads.append(layer.qkv.weight.grad.clone())
    finally:
        torch.use_deterministic_algorithms(before)
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("size_in, size_out", [(5, 9), (3, 11), (7, 7), (2, 1)])
def test_linear_matrix_equals_interpolate_with_aligned_corners(size_in, size_out):
    from sasa_det.layers.resize import bilinear_matrix

    torch.manual_seed(2)
    table = torch.randn(size_in, 4, dtype=torch.float64)
    expected = F.interpolate(table.t()[None], size=size_out, mode="linear", align_corners=True)[0].t()
    result = bilinear_matrix(size_in, size_out, dtype=torch.float64, align_corners=True) @ table
    assert (result - expected).abs().max().item() <= 1e-12
