"""The Triton SASA kernels against the dense reference, run on CPU tensors by Triton's interpreter.

``TRITON_INTERPRET=1`` only takes effect if it is set before triton is first imported, so the checks run
in one subprocess (started once for this module) and report their errors as JSON; no other test sees
the variable. Maps are tiny and odd-sized; several span more than one tile of queries. Every case runs
through both kernel families (CUDA cores and tensor cores, chosen by ``SASA_TRITON_PATH``) where the
family takes the head width; bfloat16 products of the tensor-core kernels run in float32 under the
interpreter (its ``tl.dot`` mishandles bfloat16), on bfloat16-rounded operands.
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
from sasa_det.layers.local_attention.triton_configs import (
    CUDA_CORE,
    PATH_ENV,
    TENSOR_CORE,
    candidate_configs,
    launch_config,
)
from sasa_det.layers.local_attention.triton_launch import supports_triton, triton_available

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
    ("bf16-zero-width64-tiles-k7", "bfloat16", False, 1, 1, 64, 17, 10, 7),
    ("f64-zero-width32-tiles-k9", "float64", False, 1, 2, 32, 18, 11, 9),
]
PATHS = [CUDA_CORE, TENSOR_CORE]


def runs_on(path: str, head_width: int) -> bool:
    """Whether ``path`` takes this head width (the tensor-core products need at least 16 channels)."""
    return path == CUDA_CORE or head_width >= 16


# the layer end to end through the fused projection: stride by pooling, scaled queries, channels-last input
LAYER_CASES = [
    ("layer-stride2-zero", dict(stride=2, mask_padding=False), False),
    ("layer-stride2-masked-scaled", dict(stride=2, mask_padding=True, scaled=True), False),
    ("layer-channels-last-input", dict(mask_padding=False), True),
]

_SCRIPT = textwrap.dedent(
    """
    import contextlib, json, os, sys
    import torch
    from sasa_det.layers import LocalSelfAttention2d, register_local_attention_impl
    from sasa_det.layers.local_attention import triton_launch

    # every kernel launch must happen under the input's device guard (several GPUs in one process)
    launches = {"guarded": 0, "unguarded": 0}
    guards = [0]
    real_guard, real_call = triton_launch._device_guard, triton_launch._call

    @contextlib.contextmanager
    def counting_guard(t):
        guards[0] += 1
        try:
            with real_guard(t):
                yield
        finally:
            guards[0] -= 1

    def counting_call(*args, **kwargs):
        launches["guarded" if guards[0] else "unguarded"] += 1
        return real_call(*args, **kwargs)

    triton_launch._device_guard, triton_launch._call = counting_guard, counting_call
    from sasa_det.layers.local_attention.triton_launch import local_attention_triton, local_attention_triton_fused
    from sasa_det.layers.reference import local_attention_reference

    def error(results):
        # largest difference relative to the largest magnitude of the reference tensor (at least 1)
        return max(((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item() for a, b in zip(*results))

    kernel_cases, layer_cases, paths = json.loads(sys.argv[1])
    errors = {}
    for (name, dtype, mask_padding, n, heads, d, h, w, ks), path in [(c, p) for c in kernel_cases for p in paths]:
        if path == "tensor_core" and d < 16:
            continue
        os.environ["SASA_TRITON_PATH"] = path
        name = f"{name}-{path}"
        torch.manual_seed(len(errors) // 2)
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
    os.environ["SASA_TRITON_PATH"] = "cuda_core"
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
    print(json.dumps({**errors, **{"launches_" + k: v for k, v in launches.items()}}))
    """
)


@pytest.fixture(scope="module")
def errors() -> dict[str, float]:
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps([KERNEL_CASES, LAYER_CASES, PATHS])],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# forward and all five gradients against the float64 reference, relative to the reference's largest value
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


KERNEL_RUNS = [(case, path) for case in KERNEL_CASES for path in PATHS if runs_on(path, case[5])]


@pytest.mark.parametrize("case, path", KERNEL_RUNS, ids=[f"{case[0]}-{path}" for case, path in KERNEL_RUNS])
def test_triton_kernel_matches_reference(errors, case, path):
    name, dtype = f"{case[0]}-{path}", case[1]
    assert errors[name] <= TOLERANCE[dtype], f"{name}: max error {errors[name]:.3g}"


def test_narrow_heads_are_not_run_on_tensor_cores(errors):
    assert not any(name.endswith(TENSOR_CORE) for name in errors if name.startswith(("f64-zero-5x7", "bf16-zero-5x7")))


@pytest.mark.parametrize("name", [case[0] for case in LAYER_CASES])
def test_layer_through_fused_triton_path_matches_reference(errors, name):
    assert errors[name] <= 1e-9, f"{name}: max error {errors[name]:.3g}"


def test_every_kernel_launch_is_under_the_inputs_device_guard(errors):
    assert errors["launches_guarded"] >= 3 * len(KERNEL_RUNS)  # forward + two backward kernels per run
    assert errors["launches_unguarded"] == 0


def test_kernel_cases_cover_every_thread_split():
    splits = {launch_config(case[5], getattr(torch, case[1]), case[8]).split for case in KERNEL_CASES}
    assert splits == {1, 2, 4}


def test_kernel_cases_span_several_tiles_of_both_families():
    """Some maps are larger than one tile in each direction, so halo rows and columns cross tile borders."""
    for path in PATHS:
        spanned = set()
        for _, dtype, _, _, _, d, height, width, ks in KERNEL_CASES:
            if runs_on(path, d):
                config = candidate_configs(d, getattr(torch, dtype), ks, path)[0]
                spanned.add((height > config.block_h, width > config.block_w))
        assert (True, True) in spanned, path


def test_candidates_by_width_dtype_and_forced_family(monkeypatch):
    monkeypatch.delenv(PATH_ENV, raising=False)
    assert {c.path for c in candidate_configs(8, torch.bfloat16, 7)} == {CUDA_CORE}
    assert {c.path for c in candidate_configs(32, torch.float32, 7)} == {CUDA_CORE}  # exact fp32 products only
    both = candidate_configs(32, torch.bfloat16, 7)
    assert [c.path for c in both] == [CUDA_CORE, CUDA_CORE, TENSOR_CORE, TENSOR_CORE]
    assert all(c.halo_width >= c.block_w + 6 for c in both if c.path == TENSOR_CORE)
    monkeypatch.setenv(PATH_ENV, TENSOR_CORE)
    assert {c.path for c in candidate_configs(16, torch.float32, 7)} == {TENSOR_CORE}
    assert {c.path for c in candidate_configs(8, torch.bfloat16, 7)} == {CUDA_CORE}  # too narrow: CUDA cores
    monkeypatch.setenv(PATH_ENV, "tensor")
    with pytest.raises(ValueError, match="SASA_TRITON_PATH='tensor'"):
        candidate_configs(32, torch.bfloat16, 7)


def test_auto_chooses_triton_only_for_cuda_tensors():
    assert "triton" in available_local_attention_impls()
    assert not supports_triton(torch.zeros(1, 1, 8, 2, 2))
    assert resolve_local_attention_impl("auto", torch.zeros(1, 1, 8, 2, 2)).name in {"cpp", "shift"}
    if torch.cuda.is_available():
        assert resolve_local_attention_impl("auto", torch.zeros(1, 1, 8, 2, 2, device="cuda")).name == "triton"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize("d", [8, 16, 32, 64])
def test_triton_on_cuda_matches_shift_path(monkeypatch, path, dtype, tolerance, mask_padding, d):
    monkeypatch.setenv(PATH_ENV, path)
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


def test_autotune_times_every_candidate_once_per_shape_class_and_reports_the_choice(monkeypatch, caplog):
    from sasa_det.layers.local_attention import triton_autotune

    monkeypatch.setattr(triton_autotune, "_choices", {})
    candidates = candidate_configs(32, torch.bfloat16, 7)
    speed = {config: ms for config, ms in zip(candidates, [3.0, 2.5, 1.0, 1.5])}
    timed = []

    def fake_time(run, config, device):
        timed.append(config)
        return speed[config]

    monkeypatch.setattr(triton_autotune, "_time", fake_time)
    monkeypatch.setattr(triton_autotune.os, "cpu_count", lambda: 4)
    x = torch.empty(0, dtype=torch.bfloat16)
    cuda = torch.device("cuda")
    key = triton_autotune.shape_class("forward", x, 32, 7, False, 50, 84, candidates)
    assert key == triton_autotune.shape_class("forward", x, 32, 7, False, 60, 100, candidates)  # same class
    assert key != triton_autotune.shape_class("forward", x, 32, 7, False, 200, 336, candidates)
    compiled = []

    def run(config, compile_only=False):
        compiled.append(config) if compile_only else None

    with caplog.at_level("INFO"):
        chosen = triton_autotune.choose_config(key, candidates, run, cuda)
        again = triton_autotune.choose_config(key, candidates, run, cuda)
    assert chosen == again == candidates[2] and timed == candidates  # each timed once, the fastest kept
    assert sorted(c.label for c in compiled) == sorted(c.label for c in candidates)  # all compiled ahead, once
    assert sum("tensor_core 8x8 w4" in r.getMessage() for r in caplog.records) == 1
    (entry,) = triton_autotune.autotune_report()
    assert entry["chosen"] == "tensor_core 8x8 w4" and entry["map_class"] == [64, 128]
    assert entry["ms"] == {c.label: speed[c] for c in candidates}
    # off CUDA (the interpreter) nothing is timed: the first candidate runs
    assert triton_autotune.choose_config(("other",), candidates, lambda c: None, torch.device("cpu")) == candidates[0]
    assert len(timed) == 4


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("path", PATHS)
def test_inputs_on_the_second_gpu_run_there_while_the_first_is_current(monkeypatch, path):
    from sasa_det.layers.local_attention.torch_paths import local_attention_shifted
    from sasa_det.layers.local_attention.triton_launch import local_attention_triton

    monkeypatch.setenv(PATH_ENV, path)
    torch.cuda.set_device(0)
    torch.manual_seed(0)
    inputs = [torch.randn(1, 2, 32, 19, 23, device="cuda:1") for _ in range(3)]
    inputs += [torch.randn(7, 16, device="cuda:1") for _ in range(2)]
    results = []
    for fn in (local_attention_triton, local_attention_shifted):
        leaves = [t.clone().requires_grad_() for t in inputs]
        out = fn(*leaves, 7, False)
        results.append([out, *torch.autograd.grad(out.square().sum(), leaves)])
    assert results[0][0].device == torch.device("cuda:1")
    for a, b in zip(*results):
        assert (a - b).abs().max().item() <= 1e-3 * (b.abs().max().item() + 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_autotune_on_cuda_times_both_families_for_wide_bfloat16_heads(monkeypatch):
    from sasa_det.layers.local_attention import triton_autotune
    from sasa_det.layers.local_attention.triton_launch import local_attention_triton

    monkeypatch.delenv(PATH_ENV, raising=False)
    monkeypatch.setattr(triton_autotune, "_choices", {})
    leaves = [torch.randn(1, 2, 32, 21, 30, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]
    tables = [torch.randn(7, 16, device="cuda", requires_grad=True) for _ in range(2)]
    local_attention_triton(*leaves, *tables, 7, False).float().square().sum().backward()
    report = triton_autotune.autotune_report()
    assert {entry["stage"] for entry in report} == {"forward", "backward"}
    assert all(len(entry["ms"]) == 4 and min(entry["ms"].values()) > 0 for entry in report)
