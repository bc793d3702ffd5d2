"""Training and inference throughput of whole detectors, beside torchvision's own RetinaNet.

:func:`benchmark_models` builds each detector of :data:`MODEL_CASES` (80 classes, no pretrained weights),
then on random ``batch × 3 × height × width`` images with a few random boxes each measures:

* training: median step time of forward + losses + backward + an SGD step, images/s, and the peak
  memory of one step (CUDA: ``max_memory_allocated``; CPU: peak RSS increase in a fresh process);
* inference: median time of one eval-mode forward (with post-processing), images/s;
* the time of the first training step, which includes compiling the kernels (cold when the
  compile caches are empty).

Images are given at their final size: our detectors skip the resize in training, and torchvision's
RetinaNet is built with ``min_size``/``max_size`` equal to the image's sides so its resize keeps them.
``dtype="bfloat16"`` runs under ``torch.autocast`` (weights stay float32). On CPU denormal floats are
flushed to zero (``torch.set_flush_denormal``): untrained, randomly initialised detectors produce many,
and each costs a hundred times a normal operation, which would measure the initialisation, not the model.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from sasa_det.analysis.measure import median_seconds, peak_memory_bytes, run_isolated

__all__ = ["MODEL_CASES", "SETTINGS", "ModelCase", "benchmark_models", "format_model_table", "measure_model"]

NUM_CLASSES = 80
#: How a case runs: on ``device`` in ``dtype`` (``"float32"`` or ``"bfloat16"`` autocast), ``batch`` training and
#: inference images of ``height`` x ``width``, ``repeats`` timed and ``warmup`` untimed steps.
SETTINGS = dict(device="cpu", dtype="float32", height=256, width=256, batch=1, repeats=3, warmup=1)


@dataclass(frozen=True)
class ModelCase:
    """One row: ``preset_detection_model`` keyword arguments (``None``: torchvision's ``retinanet_resnet50_fpn``)."""

    name: str
    build_kwargs: dict[str, Any] | None = field(default=None)


MODEL_CASES: list[ModelCase] = [
    ModelCase("torchvision_retinanet_resnet50", None),
    ModelCase("retinanet_resnet50", {"backbone": "resnet50"}),
    ModelCase("retinanet_sasa_resnet50_convstem", {"backbone": "sasa_resnet50_convstem"}),
    ModelCase("retinanet_sasa_resnet50", {"backbone": "sasa_resnet50"}),
    ModelCase(
        "retinanet_full_attention",
        {"backbone": "sasa_resnet50", "fpn": "attention", "head": "attention"},
    ),
    ModelCase("retinanet_aa_resnet50", {"backbone": "aa_resnet50"}),
]


def _build(case: ModelCase, height: int, width: int) -> nn.Module:
    if case.build_kwargs is None:
        from torchvision.models.detection import retinanet_resnet50_fpn

        return retinanet_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=NUM_CLASSES + 1,
            min_size=min(height, width),
            max_size=max(height, width),
        )
    from sasa_det.engine.tasks.detection import preset_detection_model

    return preset_detection_model(
        "retinanet", NUM_CLASSES, min_size=min(height, width), max_size=max(height, width), **case.build_kwargs
    )


def _inputs(settings: dict, device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(0)
    height, width = settings["height"], settings["width"]
    images, targets = [], []
    for _ in range(settings["batch"]):
        images.append(torch.rand(3, height, width, generator=generator).to(device))
        xy = torch.rand(4, 2, generator=generator) * torch.tensor([width * 0.6, height * 0.6])
        wh = 16 + torch.rand(4, 2, generator=generator) * torch.tensor([width * 0.3, height * 0.3])
        targets.append(
            {
                "boxes": torch.cat([xy, xy + wh], dim=1).to(device),
                "labels": torch.randint(1, NUM_CLASSES + 1, (4,), generator=generator).to(device),
            }
        )
    return images, targets


def _run_case(case: ModelCase, settings: dict) -> dict:
    flush = torch.device(settings["device"]).type == "cpu"
    torch.set_flush_denormal(flush)
    try:
        return _measure(case, settings)
    finally:
        torch.set_flush_denormal(False)


def _measure(case: ModelCase, settings: dict) -> dict:
    device = torch.device(settings["device"])
    torch.manual_seed(0)
    model = _build(case, settings["height"], settings["width"]).to(device)
    images, targets = _inputs(settings, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if settings["dtype"] == "bfloat16"
        else contextlib.nullcontext()
    )

    def train_step() -> None:
        with autocast:
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer() -> None:
        with torch.no_grad(), autocast:
            model(images)

    model.train()
    from sasa_det.analysis.measure import synchronize

    started = time.perf_counter()
    train_step()  # lazy set-up (kernel compilation, allocator) before measuring: the time to the first step
    synchronize(device)
    first_step_s = time.perf_counter() - started
    peak = peak_memory_bytes(train_step, device)
    train_s = median_seconds(train_step, device, settings["warmup"], settings["repeats"])
    model.eval()
    infer_s = median_seconds(infer, device, 1, settings["repeats"])
    batch = settings["batch"]
    return {
        "first_step_s": first_step_s,
        "train_step_ms": 1000 * train_s,
        "train_images_per_s": batch / train_s,
        "train_peak_mib": peak / 2**20,
        "infer_images_per_s": batch / infer_s,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def _case(name: str) -> ModelCase:
    known = {case.name: case for case in MODEL_CASES}
    if name not in known:
        raise ValueError(f"unknown case {name!r}; choose from {list(known)}")
    return known[name]


def measure_model(name: str, **settings: Any) -> dict:
    """One row of :func:`benchmark_models` (no ratios), in this process: case ``name`` run with :data:`SETTINGS`
    updated by ``settings``."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise TypeError(f"unknown benchmark settings {unknown}; valid ones are {list(SETTINGS)}")
    case = _case(name)
    return {**asdict(case), **_run_case(case, {**SETTINGS, **settings})}


def benchmark_models(cases: list[str] | None = None, isolate: bool | None = None, **settings: Any) -> list[dict]:
    """Measure the detectors of :data:`MODEL_CASES` (or the named subset) in one run.

    Args:
        cases: names to run (the torchvision baseline is always added).
        isolate: each case in a fresh process (default: on CPU, for the peak-RSS measurement).
        **settings: the :data:`SETTINGS` to change.

    Returns:
        One dict per case: ``name``, ``build_kwargs``, ``first_step_s``, ``train_step_ms``, ``train_images_per_s``,
        ``train_peak_mib``, ``infer_images_per_s``, ``parameters_m``, ``time_ratio`` and
        ``memory_ratio`` (training, vs torchvision's RetinaNet).
    """
    names = {_case(name).name for name in cases} if cases is not None else {case.name for case in MODEL_CASES}
    selected = [case.name for case in MODEL_CASES if case.name in names or case is MODEL_CASES[0]]
    if isolate is None:
        isolate = str(settings.get("device", SETTINGS["device"])).startswith("cpu")
    measure = partial(measure_model, **settings)
    results = [run_isolated(measure, name) if isolate else measure(name) for name in selected]
    base = results[0]
    for row in results:
        row["time_ratio"] = row["train_step_ms"] / base["train_step_ms"]
        row["memory_ratio"] = row["train_peak_mib"] / base["train_peak_mib"] if base["train_peak_mib"] else float("nan")
    return results


def format_model_table(results: list[dict]) -> str:
    """Markdown table of :func:`benchmark_models` results."""
    lines = [
        "| detector | params M | train step ms | × torchvision | train img/s | train peak MiB | × torchvision | infer img/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results:
        lines.append(
            f"| {row['name']} | {row['parameters_m']:.1f} | {row['train_step_ms']:.0f} | {row['time_ratio']:.2f} | "
            f"{row['train_images_per_s']:.2f} | {row['train_peak_mib']:.0f} | {row['memory_ratio']:.2f} | "
            f"{row['infer_images_per_s']:.2f} |"
        )
    return "\n".join(lines)
