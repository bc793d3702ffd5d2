"""The Triton SASA kernels against the dense reference, run on CPU tensors by Triton's interpreter.

``TRITON_INTERPRET=1`` only takes effect if it is set before triton is first imported, so the checks run
in one subprocess (started once for this module) and report their errors as JSON; no other test sees
the variable. Maps are tiny and odd-sized; several span more than one tile of queries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sasa_det.layers import available_local_attention_impls, resolve_local_attention_impl
from sasa_det.layers.local_attention.triton_launch import launch_config, supports_triton, triton_available

pytestmark = pytest.mark.skipif(not triton_available(), reason="triton is not installed")

# (name, dtype, mask_padding, N, heads, d, H, W, kernel_size). Tiles are 8×16 queries for d <= 16,
# 8×8 for d = 32 and 4×8 for d = 64 (a pixel's head over 2 and 4 threads).
KERNEL_CASES = [
    ("f64-zero-5x7-k3", "float64", False, 2, 2, 4, 5, 7, 3),
    ("f64-masked-5x7-k3", "float64", True, 2, 2, 4, 5, 7, 3),
    ("f64-zero-tiles-9x17-k5", "float64", False, 1, 1, 8, 9, 17, 5),
    ("f64-masked-tiles-9x17-k7", "float64", True, 1, 1, 8, 9, 17, 7),
    ("f64-masked-width6-k5", "float64", True, 1, 2, 6, 3, 9, 5),
    ("f64-zero-width16-k7", "float64", False, 1, 1, 16, 6, 11, 7),
    ("f64-masked-width32-tiles-k7", "float64", True, 1, 1, 32, 9, 10, 7),
    ("f64-zero-width64-tiles-k7", "float64", False, 1, 1, 64, 5, 9, 7),
    ("f64-masked-1x1", "float64", True, 1, 2, 4, 1, 1, 3),
    ("f64-zero-narrow-2x3-k7", "float64", False, 1, 2, 8, 2, 3, 7),
    ("f32-zero-5x9-k7", "float32", False, 1, 2, 8, 5, 9, 7),
    ("f32-masked-width64-k7", "float32", True, 1, 1, 64, 5, 9, 7),
    ("f16-masked-5x7-k3", "float16", True, 1, 2, 8, 5, 7, 3),
    ("bf16-zero-5x7-k7", "bfloat16", False, 1, 2, 8, 5, 7, 7),
    ("bf16-masked-width32-k7", "bfloat16", True, 1, 1, 32, 5, 7, 7),
]
# the layer end to end through the fused projection: stride by pooling, scaled queries, channels-last input
LAYER_CASES = [
    ("layer-stride2-zero", dict(stride=2, mask_padding=False), False),
    ("layer-stride2-masked-scaled", dict(stride=2, mask_padding=True, scaled=True), False),
    ("layer-channels-last-input", dict(mask_padding=False), True),
]

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from sasa_det.layers import LocalSelfAttention2d, register_local_attention_impl
    from sasa_det.layers.local_attention.triton_launch import local_attention_triton, local_attention_triton_fused
    from sasa_det.layers.reference import local_attention_reference

    def error(results):
        # largest difference relative to the largest magnitude of the reference tensor (at least 1)
        return max(((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item() for a, b in zip(*results))

    kernel_cases, layer_cases = json.loads(sys.argv[1])
    errors = {}
    for name, dtype, mask_padding, n, heads, d, h, w, ks in kernel_cases:
        torch.manual_seed(len(errors))
        dtype = getattr(torch, dtype)
        inputs = [torch.randn(n, heads, d, h, w, dtype=torch.float64) for _ in range(3)]
        inputs += [torch.randn(ks, d // 2, dtype=torch.float64) for _ in range(2)]
        grad = torch.randn(n, heads, d, h, w, dtype=torch.float64)
        results = []
        for fn, cast in ((local_attention_triton, dtype), (local_attention_reference, torch.float64)):
            leaves = [t.to(cast).requires_grad_() for t in inputs]
            out = fn(*leaves, ks, mask_padding)
            grads = torch.autograd.grad((out.double() * grad).sum(), leaves)
            assert out.dtype == cast and all(g.dtype == cast for g in grads)
            results.append([out.double()] + [g.double() for g in grads])
        errors[name] = error(results)

    # CPU tensors: no supports() check; the fused entry point is what the layer calls on CUDA
    register_local_attention_impl("triton_interpreted", local_attention_triton, fused=local_attention_triton_fused)
    register_local_attention_impl("reference", local_attention_reference)
    for name, options, channels_last in layer_cases:
        torch.manual_seed(7)
        layer = LocalSelfAttention2d(5, 8, kernel_size=3, heads=2, **options).double()
        x = torch.randn(2, 5, 7, 9, dtype=torch.float64)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        results = []
        for impl in ("triton_interpreted", "reference"):
            layer.impl = impl
            leaf = x.clone().requires_grad_()
            out = layer(leaf)
            grads = torch.autograd.grad((out * torch.cos(out)).sum(), [leaf, *layer.parameters()])
            results.append([out, *grads])
        errors[name] = error(results)
    print(json.dumps(errors))
    """
)


@pytest.fixture(scope="module")
def errors() -> dict[str, float]:
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps([KERNEL_CASES, LAYER_CASES])],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# forward and all five gradients against the float64 reference, relative to the reference's largest value
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


@pytest.mark.parametrize("case", KERNEL_CASES, ids=[case[0] for case in KERNEL_CASES])
def test_triton_kernel_matches_reference(errors, case):
    name, dtype = case[0], case[1]
    assert errors[name] <= TOLERANCE[dtype], f"{name}: max error {errors[name]:.3g}"


@pytest.mark.parametrize("name", [case[0] for case in LAYER_CASES])
def test_layer_through_fused_triton_path_matches_reference(errors, name):
    assert errors[name] <= 1e-9, f"{name}: max error {errors[name]:.3g}"


def test_kernel_cases_cover_every_thread_split():
    splits = {launch_config(case[5], getattr(torch, case[1]), case[8]).split for case in KERNEL_CASES}
    assert splits == {1, 2, 4}


def test_auto_chooses_triton_only_for_cuda_tensors():
    assert "triton" in available_local_attention_impls()
    assert not supports_triton(torch.zeros(1, 1, 8, 2, 2))
    assert resolve_local_attention_impl("auto", torch.zeros(1, 1, 8, 2, 2)).name in {"cpp", "shift"}
    if torch.cuda.is_available():
        assert resolve_local_attention_impl("auto", torch.zeros(1, 1, 8, 2, 2, device="cuda")).name == "triton"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize("d", [8, 16, 32, 64])
def test_triton_on_cuda_matches_shift_path(dtype, tolerance, mask_padding, d):
    from sasa_det.layers.local_attention.torch_paths import local_attention_shifted
    from sasa_det.layers.local_attention.triton_launch import local_attention_triton

    torch.manual_seed(d)
    inputs = [torch.randn(2, 3, d, 37, 45, device="cuda") for _ in range(3)]
    inputs += [torch.randn(7, d // 2, device="cuda") for _ in range(2)]
    grad = torch.randn(2, 3, d, 37, 45, device="cuda")
    results = []
    for fn, cast in ((local_attention_triton, dtype), (local_attention_shifted, torch.float64)):
        leaves = [t.to(cast).requires_grad_() for t in inputs]
        out = fn(*leaves, 7, mask_padding)
        grads = torch.autograd.grad((out.double() * grad).sum(), leaves)
        results.append([out.double()] + [g.double() for g in grads])
    for a, b in zip(*results):
        scale = b.abs().max().item() + 1.0
        assert (a - b).abs().max().item() <= tolerance * scale
