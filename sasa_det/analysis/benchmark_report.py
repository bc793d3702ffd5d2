"""All benchmarks in one run, written as a markdown report (``python tools/benchmark.py all``).

On CUDA: the layers at the stride-4/8/16/32 maps of an 800×1344 image with ResNet-50's 3×3 widths
(float32 and bfloat16), AA at 64×64 tokens (relative logits through FlexAttention vs a dense SDPA mask
vs no relative logits), the detectors (bfloat16 autocast) and the COCO evaluation backends. On CPU:
the layers at one 96×160 map alone and while a second training-like process uses the same cores,
smaller detectors, and the evaluation backends. Sections that would start after ``time_budget_s``
are skipped (and say so), so the run ends in bounded time even where kernel compilation is slow.
"""

from __future__ import annotations

import platform
import shlex
import sys
import time
from collections.abc import Callable
from importlib import metadata

import torch

from sasa_det.analysis.eval_benchmark import benchmark_eval, format_eval_report
from sasa_det.analysis.layer_benchmark import benchmark_layers, format_layer_table
from sasa_det.analysis.measure import background_load
from sasa_det.analysis.model_benchmark import benchmark_models, format_model_table

__all__ = ["DETECTION_MAPS", "machine_description", "run_all"]

#: stride -> (height, width, channels): the maps of an 800×1344 image and ResNet-50's 3×3 conv widths there.
DETECTION_MAPS = {4: (200, 336, 64), 8: (100, 168, 128), 16: (50, 84, 256), 32: (25, 42, 512)}
_SASA_CASES = ["conv3x3", "sasa", "sasa_shift", "sasa_halo", "sasa_unfold"]
_AA_CASES = ["aa", "aa_sdpa", "aa_no_rel", "aa_pooled"]


def machine_description(device: str) -> str:
    """CPU, GPU and library versions, one markdown bullet each."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [f"- CPU: {cpu}, {torch.get_num_threads()} torch threads"]
    if device.startswith("cuda"):
        lines.append(f"- GPU: {torch.cuda.get_device_name(torch.device(device))}, CUDA {torch.version.cuda}")
    versions = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    for package in ("triton", "torchvision", "pycocotools", "faster-coco-eval", "hotcoco"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    lines.append("- " + ", ".join(versions))
    return "\n".join(lines)


def _layer_section(title: str, **kwargs) -> str:
    results = benchmark_layers(**kwargs)
    return f"### {title}\n\n```\n{format_layer_table(results, kwargs['device'])}\n```\n"


def _cuda_sections(device: str) -> list[tuple[str, Callable[[], str]]]:
    sections = []
    for dtype in ("bfloat16", "float32"):
        for stride, (height, width, channels) in DETECTION_MAPS.items():
            cases = _SASA_CASES + (["aa_pooled", "conv_stem", "attention_stem"] if stride == 4 else _AA_CASES)
            title = f"Layers, {dtype}, stride {stride} of 800×1344: C={channels}, map {height}×{width}"
            settings = dict(device=device, dtype=dtype, channels=channels, height=height, width=width, cases=cases)
            settings.update(repeats=10, warmup=3)
            sections.append((title, lambda t=title, s=settings: _layer_section(t, **s)))
    tokens = dict(device=device, dtype="bfloat16", channels=256, height=64, width=64, batch=2, repeats=10, warmup=3)
    tokens["cases"] = ["aa", "aa_sdpa", "aa_no_rel"]
    sections.append(("AA at 64×64 tokens", lambda: _layer_section("AA at 64×64 tokens, bfloat16, C=256", **tokens)))
    sections.append(("Detectors", lambda: _model_section(device, "bfloat16", 640, 640, 2, 5)))
    return sections


def _model_section(device: str, dtype: str, height: int, width: int, batch: int, repeats: int) -> str:
    results = benchmark_models(
        device=device, dtype=dtype, height=height, width=width, batch=batch, repeats=repeats, warmup=1
    )
    return (
        f"### Detectors: RetinaNet, {dtype}, batch {batch} of {height}×{width}, 80 classes\n\n"
        f"{format_model_table(results)}\n"
    )


def _cpu_layers_under_load(threads: int) -> str:
    settings = dict(device="cpu", dtype="float32", channels=64, height=96, width=160, repeats=7, warmup=1)
    settings["cases"] = ["sasa", "sasa_shift", "sasa_halo", "sasa_unfold"]
    alone = benchmark_layers(**settings)
    with background_load(threads):
        loaded = benchmark_layers(**settings)
    return (
        f"### Layers, float32, C=64, map 96×160, alone\n\n```\n{format_layer_table(alone, 'cpu')}\n```\n\n"
        f"### The same while a second training-like process runs with {threads} threads on the same cores\n\n"
        f"```\n{format_layer_table(loaded, 'cpu')}\n```\n"
    )


def _cpu_sections() -> list[tuple[str, Callable[[], str]]]:
    threads = torch.get_num_threads()
    smaller_map = dict(device="cpu", dtype="float32", channels=64, height=48, width=80, repeats=7, warmup=1)
    return [
        ("CPU layers alone and under load", lambda: _cpu_layers_under_load(threads)),
        ("CPU layers, smaller map", lambda: _layer_section("Layers, float32, C=64, map 48×80", **smaller_map)),
        ("Detectors", lambda: _model_section("cpu", "float32", 128, 128, 1, 2)),
    ]


def _eval_section(num_images: int) -> str:
    results = benchmark_eval(num_images, segm_images=300, memory_images=0)  # memory: tools/benchmark.py eval
    return f"### COCO evaluation backends (synthetic detections)\n\n{format_eval_report(results)}\n"


def run_all(
    device: str = "cpu", eval_images: int = 5000, time_budget_s: float = 420.0, argv: list[str] | None = None
) -> str:
    """Run every benchmark for ``device`` and return the markdown report (machine, versions, command)."""
    start = time.perf_counter()
    sections = _cuda_sections(device) if device.startswith("cuda") else _cpu_sections()
    sections.append(("COCO evaluation", lambda: _eval_section(eval_images)))
    command = "python tools/benchmark.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    parts = [
        f"## {'CUDA' if device.startswith('cuda') else 'CPU'} ({time.strftime('%Y-%m-%d')})\n",
        machine_description(device),
        f"\nCommand: `{command}`\n",
    ]
    for title, run in sections:
        elapsed = time.perf_counter() - start
        if elapsed > time_budget_s:
            parts.append(
                f"### {title}\n\nskipped: the run had used {elapsed:.0f} s of its {time_budget_s:.0f} s budget\n"
            )
            continue
        print(f"[{elapsed:6.0f} s] {title}", file=sys.stderr, flush=True)
        parts.append(run())
    parts.append(f"Total time: {time.perf_counter() - start:.0f} s.\n")
    return "\n".join(parts)
