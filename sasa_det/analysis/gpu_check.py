"""One prepared check of the CUDA path: correctness, layer and detector speed, a short real training.

:func:`run_gpu_check` runs the sections of :data:`SECTIONS` one after the other, each in its own Python
process with its own timeout, so a crash (a kernel fault poisons the CUDA context) or a hang costs that
section only. Each section appends one JSON line per result to ``<out>/gpu_check.jsonl`` as soon as it
has it, every line with a ``section`` field; the parent adds one ``status`` line per section (``ok``,
``failed``, ``crashed``, ``timeout``, ``skipped``). Kernel compile caches (Triton, Inductor) start empty
under ``<out>/caches``, so the times include cold compiles, as a user's first run has them.

``dry_run=True`` runs every section on the CPU at tiny sizes (the Triton kernels under Triton's
interpreter): what the test suite runs, so the check cannot rot.

Sections:

* ``environment`` -- torch, CUDA, Triton, the GPU; packages a bare PyTorch image lacks.
* ``correctness_sasa`` -- every SASA implementation on the device (float32, bfloat16; head widths 8 and
  32; masked and zero-padded borders; an odd-sized map) against the float64 CPU reference, forward and
  all gradients.
* ``correctness_stem_aa`` -- the attention stem and AA (at the presets' head widths, with the path that
  ran) against their float64 CPU references, in float32 and under bfloat16 autocast; the stem at 1024²
  and 800×1344 against the CPU.
* ``layers`` -- forward+backward time and peak memory against a 3×3 conv (SASA at 64 channels/8 heads
  on a 200×336 map and at 256 channels on 50×84; the stem on an 800×1344 image; AA at 64×64 tokens
  against SDPA without relative logits), each row naming the path that ran.
* ``model_*`` -- RetinaNet with a conv, SASA and AA ResNet-50: training images/s at 1024², batch 4,
  bfloat16 autocast, and the time to the first step (compiles included).
* ``train_eval`` -- ``tools/train.py configs/coco/retinanet_sasa_resnet50.yaml`` for 20 steps with
  bfloat16 AMP on a generated COCO-format set, then ``tools/eval.py`` on its checkpoint.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MISSING_PACKAGE_HINT", "SECTIONS", "Section", "format_results", "read_results", "run_gpu_check"]

RESULTS_FILE = "gpu_check.jsonl"
#: The packages this project needs that a bare PyTorch image (torch, torchvision, Lightning) lacks.
EXTRA_PACKAGES = {"omegaconf": "omegaconf", "pycocotools": "pycocotools", "faster_coco_eval": "faster-coco-eval"}
MISSING_PACKAGE_HINT = (
    "On a machine without network: download the wheels elsewhere with "
    "`pip download --no-deps --only-binary=:all: --python-version 3.12 -d wheels omegaconf pycocotools "
    "faster-coco-eval antlr4-python3-runtime`, copy the folder, then "
    "`pip install --no-index --no-deps wheels/*.whl` (or `--target DIR` and `PYTHONPATH=DIR`)."
)
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Section:
    """A part of the check: ``run(settings)`` yields result dicts; ``timeout_s`` bounds its process."""

    name: str
    timeout_s: float
    run: Callable[[dict], Iterator[dict]]


def _settings(dry_run: bool, out: Path) -> dict:
    import torch

    device = "cuda" if not dry_run and torch.cuda.is_available() else "cpu"
    return {"dry_run": dry_run, "device": device, "out": str(out)}


def _relative_error(results: list, expected: list) -> float:
    """Largest difference of corresponding tensors, relative to the reference tensor's largest magnitude (>= 1)."""
    return max(
        ((a.double().cpu() - b.double().cpu()).abs().max() / b.double().abs().max().clamp(min=1.0)).item()
        for a, b in zip(results, expected)
    )


#: (forward, gradients) tolerances of :func:`_relative_error`. bfloat16 gradients through the unscaled
#: softmax logits of SASA and the stem (Eq. 3 has no 1/sqrt(d)) lose about a decimal digit more.
TOLERANCE = {"float32": (1e-4, 1e-4), "bfloat16": (5e-2, 2.5e-1)}


def _compare(results: list, expected: list, dtype_name: str) -> dict:
    """Forward and gradient errors of ``[out, *grads]`` lists, their tolerances and the verdict."""
    forward, gradients = _relative_error(results[:1], expected[:1]), _relative_error(results[1:], expected[1:])
    tolerance = TOLERANCE[dtype_name]
    return {
        "forward_error": forward,
        "grad_error": gradients,
        "tolerance": list(tolerance),
        "ok": forward <= tolerance[0] and gradients <= tolerance[1],
    }


# --------------------------------------------------------------------------- sections
def environment(settings: dict) -> Iterator[dict]:
    """Versions and the GPU."""
    import torch

    record = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    triton = importlib.util.find_spec("triton")
    if triton is not None:
        import triton as triton_module

        record["triton"] = triton_module.__version__
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        record.update(
            gpu=properties.name,
            capability=f"{properties.major}.{properties.minor}",
            memory_gib=round(properties.total_memory / 2**30, 1),
            gpus=torch.cuda.device_count(),
        )
    missing = [package for module, package in EXTRA_PACKAGES.items() if importlib.util.find_spec(module) is None]
    record["missing_packages"] = missing
    if missing:
        record["install"] = MISSING_PACKAGE_HINT
    yield record


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
        error = _relative_error([result], [reference])
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


def layers(settings: dict) -> Iterator[dict]:
    """Layer speed and memory against a 3×3 conv (bfloat16 on CUDA)."""
    from sasa_det.analysis.layer_benchmark import benchmark_layers

    device = settings["device"]
    dry = settings["dry_run"]
    dtype = "float32" if device == "cpu" else "bfloat16"
    groups = [
        (
            "sasa_64ch_200x336",
            dict(channels=64, heads=8, height=200, width=336),
            ["sasa", "sasa_shift", "attention_stem"],
        ),
        (
            "sasa_256ch_50x84",
            dict(channels=256, heads=8, height=50, width=84),
            ["sasa", "sasa_cuda_core", "sasa_tensor_core"],
        ),
        (
            "aa_128ch_64x64",
            dict(channels=128, heads=8, height=64, width=64),
            ["aa", "aa_no_rel_padded", "aa_no_rel", "aa_sdpa", "aa_pooled"],
        ),
    ]
    for group, shape, cases in groups:
        if dry:
            shape = dict(channels=16, heads=2, height=8, width=12)
        rows = benchmark_layers(
            device=device,
            dtype=dtype,
            kernel_size=7,
            batch=1,
            repeats=1 if dry else 10,
            warmup=0 if dry else 2,
            cases=cases,
            isolate=False,
            **shape,
        )
        for row in rows:
            yield {
                "group": group,
                "dtype": dtype,
                **{k: v for k, v in row.items() if k != "description"},
                "flex_used": row.get("path") == "flex" if row["name"].startswith("aa") else None,
            }


def _model_section(name: str) -> Callable[[dict], Iterator[dict]]:
    def run(settings: dict) -> Iterator[dict]:
        from sasa_det.analysis.model_benchmark import measure_model

        dry = settings["dry_run"]
        device = settings["device"]
        size, batch = (64, 1) if dry else (1024, 4)
        dtype = "float32" if device == "cpu" else "bfloat16"
        row = measure_model(
            name,
            device=device,
            dtype=dtype,
            height=size,
            width=size,
            batch=batch,
            repeats=1 if dry else 5,
            warmup=0 if dry else 1,
        )
        yield {"model": name, "dtype": dtype, "image": size, "batch": batch, **row}

    run.__doc__ = f"Training throughput of {name} and the time to its first step."
    return run


def train_eval(settings: dict) -> Iterator[dict]:
    """``tools/train.py`` for a few steps with AMP on a generated COCO-format set, then ``tools/eval.py``."""
    from sasa_det.data.shapes import make_shapes_dataset

    dry = settings["dry_run"]
    out = Path(settings["out"])
    image = 64 if dry else 512
    data = make_shapes_dataset(
        out / "train_data", num_train=8 if dry else 80, num_val=4 if dry else 16, image_size=image
    )
    run_dir = out / "train_run"
    steps = 2 if dry else 20
    overrides = [
        f"output_dir={run_dir}",
        f"data.train_images={data['train_images']}",
        f"data.train_ann={data['train_ann']}",
        f"data.val_images={data['val_images']}",
        f"data.val_ann={data['val_ann']}",
        "model.num_classes=3",
        f"data.min_sizes=[{image}]",
        f"data.max_size={image}",
        f"model.min_size={image}",
        f"model.max_size={image}",
        f"data.batch_size={2 if dry else 4}",
        f"data.val_batch_size={2 if dry else 4}",
        f"data.num_workers={0 if dry else 4}",
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.devices=1",
        "trainer.strategy=auto",
        "trainer.sync_batchnorm=false",
        f"trainer.accelerator={'cpu' if settings['device'] == 'cpu' else 'gpu'}",
        f"trainer.precision={'32-true' if settings['device'] == 'cpu' else 'bf16-mixed'}",
    ]
    if dry:  # a narrow ResNet-26 with every kind of stage keeps the CPU run to seconds
        overrides += [
            "model.backbone={name: resnet26, base_width: 8, stage_ops: [conv, sasa, sasa, aa]}",
            "model.fpn_channels=64",
        ]
    config = REPO / "configs" / "coco" / "retinanet_sasa_resnet50.yaml"
    started = time.perf_counter()
    train = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train.py"), str(config), *overrides], capture_output=True, text=True
    )
    train_s = time.perf_counter() - started
    record = {
        "step": "train",
        "steps": steps,
        "image": image,
        "seconds": round(train_s, 1),
        "returncode": train.returncode,
    }
    if train.returncode != 0:
        yield {**record, "ok": False, "error": train.stderr[-2000:]}
        return
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    yield {**record, "ok": True, "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    started = time.perf_counter()
    evaluation = subprocess.run(
        [sys.executable, str(REPO / "tools" / "eval.py"), str(checkpoint), "--out", str(out / "eval_run")],
        capture_output=True,
        text=True,
    )
    record = {"step": "eval", "seconds": round(time.perf_counter() - started, 1), "returncode": evaluation.returncode}
    if evaluation.returncode != 0:
        yield {**record, "ok": False, "error": evaluation.stderr[-2000:]}
        return
    result = json.loads((out / "eval_run" / "metrics.json").read_text())
    yield {**record, "ok": True, "bbox_AP": result.get("val/bbox/AP"), "bbox_AP50": result.get("val/bbox/AP50")}


SECTIONS: list[Section] = [
    Section("environment", 60, environment),
    Section("correctness_sasa", 150, correctness_sasa),
    Section("correctness_stem_aa", 120, correctness_stem_aa),
    Section("layers", 120, layers),
    Section("model_retinanet_resnet50", 90, _model_section("retinanet_resnet50")),
    Section("model_retinanet_sasa_resnet50", 120, _model_section("retinanet_sasa_resnet50")),
    Section("model_retinanet_aa_resnet50", 120, _model_section("retinanet_aa_resnet50")),
    Section("train_eval", 180, train_eval),
]


# --------------------------------------------------------------------------- running
def _append(path: Path, record: dict) -> None:
    with path.open("a") as file:
        file.write(json.dumps(record, default=str) + "\n")
        file.flush()
        os.fsync(file.fileno())


def run_section(name: str, out: Path, dry_run: bool) -> None:
    """Run one section in this process, appending each result to the results file as it comes."""
    section = {s.name: s for s in SECTIONS}[name]
    path = out / RESULTS_FILE
    for record in section.run(_settings(dry_run, out)):
        _append(path, {"section": name, **record})


def _child_environment(out: Path, section: str, dry_run: bool) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if dry_run and section == "correctness_sasa":
        env["TRITON_INTERPRET"] = "1"  # the Triton kernels on CPU tensors (set before triton is imported)
    caches = out / "caches"
    env.setdefault("TRITON_CACHE_DIR", str(caches / "triton"))
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(caches / "inductor"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_gpu_check(
    out: str | os.PathLike,
    dry_run: bool = False,
    sections: list[str] | None = None,
    budget_s: float = 470.0,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """Run the sections (all, or the named ones) each in a fresh process; returns every result line.

    A section gets its own timeout, cut to what is left of ``budget_s``; sections that would start with
    less than 20 s left are marked skipped. ``<out>/gpu_check.jsonl`` is started afresh.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    path.write_text("")
    chosen = [s for s in SECTIONS if sections is None or s.name in sections]
    unknown = sorted(set(sections or ()) - {s.name for s in SECTIONS})
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {[s.name for s in SECTIONS]}")
    started = time.perf_counter()
    for section in chosen:
        left = budget_s - (time.perf_counter() - started)
        if left < 20:
            _append(
                path, {"section": section.name, "status": "skipped", "reason": f"time budget of {budget_s:.0f} s spent"}
            )
            progress(f"{section.name}: skipped (time budget spent)")
            continue
        timeout = min(section.timeout_s, left)
        progress(f"{section.name}: running (timeout {timeout:.0f} s)")
        command = [sys.executable, "-m", "sasa_det.analysis.gpu_check", "--section", section.name, "--out", str(out)]
        if dry_run:
            command.append("--dry-run")
        section_started = time.perf_counter()
        try:
            child = subprocess.run(
                command,
                env=_child_environment(out, section.name, dry_run),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            seconds = time.perf_counter() - section_started
            status = "ok" if child.returncode == 0 else ("crashed" if child.returncode < 0 else "failed")
            record = {
                "section": section.name,
                "status": status,
                "seconds": round(seconds, 1),
                "returncode": child.returncode,
            }
            if child.returncode != 0:
                record["error"] = "\n".join(child.stderr.strip().splitlines()[-15:])
        except subprocess.TimeoutExpired as expired:
            stderr = (
                expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) else (expired.stderr or "")
            )
            record = {
                "section": section.name,
                "status": "timeout",
                "seconds": round(timeout, 1),
                "error": "\n".join(stderr.strip().splitlines()[-5:]),
            }
        _append(path, record)
        progress(f"{section.name}: {record['status']} in {record['seconds']:.0f} s")
    return read_results(path)


def read_results(path: str | os.PathLike) -> list[dict]:
    """The result lines of a results file (a torn last line, from a crash mid-write, is left out)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _describe(record: dict) -> str:
    skip = {"section", "status", "error", "install"}
    parts = []
    for key, value in record.items():
        if key in skip or value is None:
            continue
        if isinstance(value, float):
            value = f"{value:.3g}" if math.isfinite(value) else str(value)
        elif isinstance(value, dict):
            value = ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(value.items())[:6]
            )
        parts.append(f"{key}={value}")
    return " ".join(parts)


def format_results(records: list[dict]) -> str:
    """A plain-text table: one line per result, the section's status after its results."""
    lines = [f"{'section':<30} {'result':<8} details", "-" * 100]
    for record in records:
        if "status" in record:
            result = record["status"]
        elif "ok" in record:
            result = "ok" if record["ok"] else "FAIL"
        elif "skipped" in record:
            result = "skipped"
        else:
            result = "-"
        lines.append(f"{record['section']:<30} {result:<8} {_describe(record)}")
        if record.get("error") and record.get("status") != "ok":
            lines.extend(f"{'':<39} | {line}" for line in str(record["error"]).splitlines()[-6:])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of one section's process (``python -m sasa_det.analysis.gpu_check --section NAME``)."""
    parser = argparse.ArgumentParser(description="Run one section of the GPU check (see tools/gpu_check.py).")
    parser.add_argument("--section", required=True, choices=[s.name for s in SECTIONS])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    run_section(args.section, args.out, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
