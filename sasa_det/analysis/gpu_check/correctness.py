"""The GPU check's correctness sections: SASA, the attention stem and AA on the device against float64 CPU
references, forward and all gradients."""

from __future__ import annotations

import time
from collections.abc import Iterator

__all__ = ["TOLERANCE", "correctness_sasa", "correctness_stem_aa", "relative_error"]


def relative_error(results: list, expected: list) -> float:
    """Largest difference of corresponding tensors, relative to the reference tensor's largest magnitude (>= 1)."""
    return max(
        ((a.double().cpu() - b.double().cpu()).abs().max() / b.double().abs().max().clamp(min=1.0)).item()
        for a, b in zip(results, expected)
    )


#: (forward, gradients) tolerances of :func:`relative_error`. bfloat16 gradients through the unscaled
#: softmax logits of SASA and the stem (Eq. 3 has no 1/sqrt(d)) lose about a decimal digit more.
TOLERANCE = {"float32": (1e-4, 1e-4), "bfloat16": (5e-2, 2.5e-1)}


def _compare(results: list, expected: list, dtype_name: str) -> dict:
    """Forward and gradient errors of ``[out, *grads]`` lists, their tolerances and the verdict."""
    forward, gradients = relative_error(results[:1], expected[:1]), relative_error(results[1:], expected[1:])
    tolerance = TOLERANCE[dtype_name]
    return {
        "forward_error": forward,
        "grad_error": gradients,
        "tolerance": list(tolerance),
        "ok": forward <= tolerance[0] and gradients <= tolerance[1],
    }


def correctness_sasa(settings: dict) -> Iterator[dict]:
    """Every SASA implementation on the device against the float64 CPU reference; the Triton kernels once
    per kernel family (``SASA_TRITON_PATH``), then the kernel choices the autotuner made."""
    import torch

    from sasa_det.layers import available_local_attention_impls, resolve_local_attention_impl
    from sasa_det.layers.local_attention.triton_autotune import autotune_report
    from sasa_det.layers.local_attention.triton_configs import (
        CUDA_CORE,
        TENSOR_CORE,
        candidate_configs,
        kernel_family,
    )
    from sasa_det.layers.reference import local_attention_reference

    device = settings["device"]
    dry = settings["dry_run"]
    n, heads, height, width, kernel_size = (1, 2, 5, 7, 3) if dry else (2, 2, 13, 19, 7)
    impls = [name for name in available_local_attention_impls() if name not in ("auto", "reference", "triton")]
    variants = [(name, None) for name in impls] + [("triton", CUDA_CORE), ("triton", TENSOR_CORE), ("triton", None)]
    for head_width in (8, 32):
        for mask_padding in (False, True):
            torch.manual_seed(head_width + mask_padding)
            inputs = [torch.randn(n, heads, head_width, height, width, dtype=torch.float64) for _ in range(3)]
            inputs += [torch.randn(kernel_size, head_width // 2, dtype=torch.float64) for _ in range(2)]
            grad = torch.randn(n, heads, head_width, height, width, dtype=torch.float64)
            leaves = [t.clone().requires_grad_() for t in inputs]
            out = local_attention_reference(*leaves, kernel_size, mask_padding)
            expected = [out, *torch.autograd.grad((out * grad).sum(), leaves)]
            for dtype_name in ("float32", "bfloat16"):
                dtype = getattr(torch, dtype_name)
                for impl_name, family in variants:
                    record = {
                        "impl": impl_name,
                        "dtype": dtype_name,
                        "head_width": head_width,
                        "mask_padding": mask_padding,
                        "map": [n, heads, height, width],
                        "kernel_size": kernel_size,
                    }
                    if impl_name == "triton":
                        families = {c.path for c in candidate_configs(head_width, dtype, kernel_size, family)}
                        if family is not None and family not in families:
                            continue  # this family does not take this head width or dtype
                        record["family"] = family or "autotuned: " + "/".join(sorted(families))
                    leaves = [t.to(device=device, dtype=dtype).requires_grad_() for t in inputs]
                    interpreted = dry and impl_name == "triton"  # the dry run's Triton runs on CPU tensors
                    try:
                        impl = resolve_local_attention_impl(impl_name, None if interpreted else leaves[0])
                    except ValueError as error:
                        yield {**record, "skipped": str(error)}
                        continue
                    with kernel_family(family):
                        started = time.perf_counter()
                        out = impl.fn(*leaves, kernel_size, mask_padding)
                        result = [out, *torch.autograd.grad((out.double() * grad.to(device)).sum(), leaves)]
                    yield {
                        **record,
                        **_compare(result, expected, dtype_name),
                        "seconds": round(time.perf_counter() - started, 2),
                    }
    for entry in autotune_report():
        yield {"autotune": entry}


def correctness_stem_aa(settings: dict) -> Iterator[dict]:
    """The attention stem and AA on the device against their float64 CPU references."""
    import torch

    from sasa_det.layers import AugmentedConv2d, SpatiallyAwareStem
    from sasa_det.layers.reference import augmented_conv_reference, spatially_aware_stem_reference

    device = settings["device"]
    dry = settings["dry_run"]

    def forward_and_grads(fn, module, x, dtype_name="float64"):
        # bfloat16 as training runs it: float32 weights under autocast
        autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=dtype_name == "bfloat16")
        x = x.detach().clone().requires_grad_()
        with autocast:
            out = fn(x)
        out = out.float() if dtype_name == "bfloat16" else out
        return [out, *torch.autograd.grad((out * torch.cos(out)).sum(), [x, *module.parameters()])]

    torch.manual_seed(0)
    stem = SpatiallyAwareStem(3, 16 if dry else 64).double()
    x = torch.randn(2, 3, *((9, 11) if dry else (37, 45)), dtype=torch.float64)
    expected = forward_and_grads(lambda t: spatially_aware_stem_reference(stem, t), stem, x)
    for dtype_name in ("float32", "bfloat16"):
        moved = SpatiallyAwareStem(3, stem.out_channels).to(device=device)
        moved.load_state_dict(stem.state_dict())
        result = forward_and_grads(moved, moved, x.to(device=device, dtype=torch.float32), dtype_name)
        yield {
            "layer": "attention_stem",
            "dtype": dtype_name,
            "input": list(x.shape),
            **_compare(result, expected, dtype_name),
        }
    # COCO sizes: past the 65 535 blocks of one SDPA call (the CPU forward is the reference here)
    for size in ((64, 64),) if dry else ((1024, 1024), (800, 1344)):
        torch.manual_seed(1)
        big = SpatiallyAwareStem(3, 64).eval()
        image = torch.randn(1, 3, *size)
        with torch.no_grad():
            reference = big(image)
            result = big.to(device)(image.to(device))
        error = relative_error([result], [reference])
        yield {
            "layer": "attention_stem",
            "dtype": "float32",
            "input": list(image.shape),
            "forward_error": error,
            "tolerance": [1e-4],
            "ok": error <= 1e-4,
            "reference": "CPU float32 forward",
        }
    # AA at the head widths of the presets (d_k/N_h, d_v/N_h): 3/2, 6/3, 13/6
    for channels in (128, 256, 512):
        torch.manual_seed(channels)
        layer = AugmentedConv2d(8, channels, heads=8, max_size=(7, 9)).double()
        with torch.no_grad():
            layer.rel_width.normal_()
            layer.rel_height.normal_()
        x = torch.randn(2, 8, 7, 9, dtype=torch.float64)
        expected = forward_and_grads(lambda t, layer=layer: augmented_conv_reference(layer, t), layer, x)
        for dtype_name in ("float32", "bfloat16"):
            moved = AugmentedConv2d(8, channels, heads=8, max_size=(7, 9)).to(device=device)
            moved.load_state_dict(layer.state_dict())
            result = forward_and_grads(moved, moved, x.to(device=device, dtype=torch.float32), dtype_name)
            yield {
                "layer": "augmented_conv",
                "dtype": dtype_name,
                "head_widths": [layer.dk // 8, layer.dv // 8],
                "path": moved.attention_path,
                "flex_used": moved.attention_path == "flex",
                **_compare(result, expected, dtype_name),
            }
