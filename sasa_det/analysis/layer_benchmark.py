"""Speed and memory of the attention layers against convolutions of the same width.

:func:`benchmark_layers` times forward + backward (median of ``repeats`` runs after warm-up) and
measures the peak memory of one forward + backward for:

* ``conv3x3``: a 3×3 convolution C -> C (the baseline of the layer rows),
* ``sasa`` (``impl="auto"``: the compiled loop on CPU, the Triton kernels the autotuner keeps on CUDA),
  ``sasa_cuda_core`` and ``sasa_tensor_core`` (CUDA only: the Triton kernels of one family, forced by
  ``SASA_TRITON_PATH``), ``sasa_shift`` (the portable shifted-view path), ``sasa_halo`` (blocked queries
  with key/value halos) and ``sasa_unfold`` (the unfold implementation),
* ``aa`` (global attention, stride 1; relative logits through FlexAttention on CUDA, a dense mask
  to SDPA elsewhere), ``aa_sdpa`` (always the dense mask), ``aa_no_rel`` (no relative logits: plain
  SDPA), ``aa_no_rel_padded`` (the same with head widths padded to 16 as FlexAttention gets them, so
  SDPA's fused kernels run: the memory baseline of ``aa`` on CUDA) and ``aa_pooled`` (``pool_attention=True``),
* ``conv_stem`` (7×7/2 conv, BN, ReLU, 3×3/2 max-pool; the baseline of the stem rows) and
  ``attention_stem`` (:class:`SpatiallyAwareStem`), both on a 3-channel image 4× the map size
  so that their outputs have the layers' map size.

Memory: on CUDA the increase of ``torch.cuda.max_memory_allocated`` over the memory held before
the step; on CPU the increase of the process's peak resident set size (``ru_maxrss``) over the
resident size before the step, each case in a fresh subprocess (so earlier cases do not hide a
peak). The CPU figure includes allocator and library overheads and is coarser than the CUDA one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sasa_det.analysis.measure import IsolatedProcessDied, median_seconds, peak_memory_bytes, run_isolated
from sasa_det.layers import AugmentedConv2d, LocalSelfAttention2d, SpatiallyAwareStem, resolve_local_attention_impl
from sasa_det.layers.local_attention.triton_autotune import autotune_report, map_class
from sasa_det.layers.local_attention.triton_configs import kernel_family
from sasa_det.layers.relative_flex_attention import flex_attention_available, flex_attention_report, padded_width

__all__ = ["BenchmarkCase", "LAYER_CASES", "benchmark_layers", "format_layer_progress", "format_layer_table"]


@dataclass(frozen=True)
class BenchmarkCase:
    """One row: a module builder, its input, and the row it is compared with."""

    name: str
    baseline: str
    description: str
    triton_path: str | None = None  # forces one SASA kernel family (SASA_TRITON_PATH) while the case runs
    cuda_only: bool = False


LAYER_CASES: list[BenchmarkCase] = [
    BenchmarkCase("conv3x3", "conv3x3", "3×3 conv C->C"),
    BenchmarkCase("sasa", "conv3x3", "LocalSelfAttention2d, impl='auto'"),
    BenchmarkCase("sasa_cuda_core", "conv3x3", "LocalSelfAttention2d, Triton CUDA-core kernels", "cuda_core", True),
    BenchmarkCase(
        "sasa_tensor_core", "conv3x3", "LocalSelfAttention2d, Triton tensor-core kernels", "tensor_core", True
    ),
    BenchmarkCase("sasa_shift", "conv3x3", "LocalSelfAttention2d, shifted views"),
    BenchmarkCase("sasa_halo", "conv3x3", "LocalSelfAttention2d, halo blocks"),
    BenchmarkCase("sasa_unfold", "conv3x3", "LocalSelfAttention2d, unfold"),
    BenchmarkCase("aa", "conv3x3", "AugmentedConv2d, stride 1"),
    BenchmarkCase("aa_sdpa", "conv3x3", "AugmentedConv2d, relative logits as a dense SDPA mask"),
    BenchmarkCase("aa_no_rel", "conv3x3", "AugmentedConv2d, no relative logits"),
    BenchmarkCase(
        "aa_no_rel_padded",
        "conv3x3",
        "AugmentedConv2d, no relative logits, head widths padded as for FlexAttention (memory baseline of 'aa')",
    ),
    BenchmarkCase("aa_pooled", "conv3x3", "AugmentedConv2d, pool_attention"),
    BenchmarkCase("conv_stem", "conv_stem", "7×7/2 conv+BN+ReLU+maxpool"),
    BenchmarkCase("attention_stem", "conv_stem", "SpatiallyAwareStem"),
]


def _build(name: str, settings: dict) -> tuple[nn.Module, tuple[int, ...]]:
    channels, heads, kernel_size = settings["channels"], settings["heads"], settings["kernel_size"]
    batch, height, width = settings["batch"], settings["height"], settings["width"]
    map_shape = (batch, channels, height, width)
    image_shape = (batch, 3, 4 * height, 4 * width)
    builders: dict[str, Callable[[], tuple[nn.Module, tuple[int, ...]]]] = {
        "conv3x3": lambda: (nn.Conv2d(channels, channels, 3, padding=1, bias=False), map_shape),
        "sasa": lambda: (LocalSelfAttention2d(channels, channels, kernel_size, heads), map_shape),
        "sasa_cuda_core": lambda: (
            LocalSelfAttention2d(channels, channels, kernel_size, heads, impl="triton"),
            map_shape,
        ),
        "sasa_tensor_core": lambda: (
            LocalSelfAttention2d(channels, channels, kernel_size, heads, impl="triton"),
            map_shape,
        ),
        "sasa_shift": lambda: (LocalSelfAttention2d(channels, channels, kernel_size, heads, impl="shift"), map_shape),
        "sasa_halo": lambda: (LocalSelfAttention2d(channels, channels, kernel_size, heads, impl="halo"), map_shape),
        "sasa_unfold": lambda: (
            LocalSelfAttention2d(channels, channels, kernel_size, heads, impl="unfold"),
            map_shape,
        ),
        "aa": lambda: (AugmentedConv2d(channels, channels, heads=heads, max_size=(height, width)), map_shape),
        "aa_sdpa": lambda: (
            AugmentedConv2d(channels, channels, heads=heads, max_size=(height, width), attention_impl="sdpa"),
            map_shape,
        ),
        "aa_no_rel": lambda: (
            AugmentedConv2d(channels, channels, heads=heads, max_size=(height, width), relative=False),
            map_shape,
        ),
        "aa_no_rel_padded": lambda: (
            PaddedAugmentedConv2d(channels, channels, heads=heads, max_size=(height, width), relative=False),
            map_shape,
        ),
        "aa_pooled": lambda: (
            AugmentedConv2d(channels, channels, heads=heads, max_size=(height, width), pool_attention=True),
            map_shape,
        ),
        "conv_stem": lambda: (
            nn.Sequential(
                nn.Conv2d(3, channels, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            ),
            image_shape,
        ),
        "attention_stem": lambda: (SpatiallyAwareStem(3, channels), image_shape),
    }
    return builders[name]()


class PaddedAugmentedConv2d(AugmentedConv2d):
    """AA whose SDPA gets head widths zero-padded as the FlexAttention path pads them, so that SDPA's fused
    kernels (which need widths that are multiples of 8) serve as the memory baseline of the relative path."""

    def _dense_attention(self, q, k, v, mask):
        dvh = v.shape[-1]
        pad = lambda t: F.pad(t, (0, padded_width(t.shape[-1]) - t.shape[-1]))  # noqa: E731
        return F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=mask, scale=1.0)[..., :dvh]


def flex_runs(device: str) -> bool:
    """Whether ``AugmentedConv2d(attention_impl="auto")`` will use FlexAttention on ``device`` (no probe failed)."""
    if not device.startswith("cuda") or not flex_attention_available():
        return False
    return all(entry["usable"] for entry in flex_attention_report() if entry["device"].startswith("cuda"))


def _attention_bytes(name: str, settings: dict) -> int:
    """Rough size of the (HW)² attention tensors an AA case needs (logits, weights and their grads); 0 for
    the paths that form none (FlexAttention, SDPA's fused kernels without a mask). Off CUDA, SDPA's fused kernel
    needs the queries' and values' head widths equal, so ``aa_no_rel`` (whose widths differ) forms them too."""
    dense = name == "aa_sdpa" or (name in ("aa", "aa_pooled") and not flex_runs(settings["device"]))
    dense = dense or (name == "aa_no_rel" and not settings["device"].startswith("cuda"))
    if not dense:
        return 0
    height, width = settings["height"], settings["width"]
    if name == "aa_pooled":
        height, width = (height + 1) // 2, (width + 1) // 2
    element = torch.finfo(getattr(torch, settings["dtype"])).bits // 8
    return 4 * settings["batch"] * settings["heads"] * (height * width) ** 2 * element


def _run_case(name: str, settings: dict) -> dict:
    """Peak memory of one forward+backward, then the median time of ``repeats`` of them."""
    case = {case.name: case for case in LAYER_CASES}[name]
    forced = kernel_family(case.triton_path) if case.triton_path else contextlib.nullcontext()
    with forced:
        return _measure_case(name, settings)


def _measure_case(name: str, settings: dict) -> dict:
    device = torch.device(settings["device"])
    dtype = getattr(torch, settings["dtype"])
    torch.manual_seed(0)
    module, shape = _build(name, settings)
    module = module.to(device=device, dtype=dtype).train()
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    # one step on a small input first, so lazy library set-up is not counted as the layer's memory
    small = torch.randn((*shape[:2], min(shape[2], 16), min(shape[3], 16)), device=device, dtype=dtype)

    def step(inputs: torch.Tensor = x) -> None:
        out = module(inputs)
        out.backward(torch.ones_like(out))
        inputs.grad = None
        module.zero_grad(set_to_none=True)

    step(small.requires_grad_())
    if device.type == "cuda":
        step()  # kernel choices (autotuning) for this size happen here, not in the measured steps
    peak = peak_memory_bytes(step, device)
    seconds = median_seconds(step, device, settings["warmup"], settings["repeats"])
    return {"time_ms": 1000 * seconds, "peak_mib": peak / 2**20, "input": list(shape), "path": _path(module, x)}


def _path(module: nn.Module, x: torch.Tensor) -> str | None:
    """What ran: the SASA implementation, or AA's attention path (``"flex"``: FlexAttention used)."""
    if isinstance(module, LocalSelfAttention2d):
        n, _, height, width = x.shape
        probe = torch.empty((), device=x.device, dtype=x.dtype).expand(
            n, module.heads, module.head_channels, height, width
        )
        name = resolve_local_attention_impl(module.impl, probe).name
        if name == "triton":  # which kernels the autotuner kept for this map
            chosen = [
                f"{entry['stage']} {entry['chosen']}"
                for entry in autotune_report()
                if entry["head_width"] == module.head_channels
                and entry["dtype"] == str(x.dtype)
                and entry["map_class"] == map_class(height, width)
            ]
            return f"triton ({'; '.join(chosen)})" if chosen else name
        return name
    return getattr(module, "attention_path", None)


def benchmark_layers(
    device: str = "cpu",
    dtype: str = "float32",
    channels: int = 64,
    heads: int = 8,
    kernel_size: int = 7,
    height: int = 96,
    width: int = 160,
    batch: int = 1,
    repeats: int = 5,
    warmup: int = 1,
    cases: list[str] | None = None,
    max_attention_bytes: int = 4 * 2**30,
    isolate: bool | None = None,
    progress: Callable[[dict, int, int], None] | None = None,
) -> list[dict]:
    """Measure the cases of :data:`LAYER_CASES` (or the named subset) in one run.

    Args:
        device, dtype: where and in which precision (``"float32"``, ``"float16"``, ...).
        channels, heads, kernel_size: layer width, attention heads, SASA window.
        height, width, batch: the feature map (the stems get a ``4·height × 4·width`` image).
        repeats, warmup: timed and untimed forward+backward steps per case.
        cases: names to run; baselines of the chosen rows are added.
        max_attention_bytes: AA cases whose (HW)² attention tensors would exceed this are skipped.
        isolate: run each case in a fresh subprocess (default: on CPU, where it is needed for the
            peak-RSS measurement).
        progress: called as ``progress(row, done, total)`` when each case has finished (or was skipped),
            ``row`` as returned below but without the ratios.

    Returns:
        One dict per case: ``name``, ``description``, ``baseline``, ``input``, ``time_ms``,
        ``peak_mib``, ``path`` (the SASA implementation or AA path that ran; ``"flex"``: FlexAttention),
        ``time_ratio``, ``memory_ratio`` (vs the baseline row) or ``skipped`` (reason).
    """
    known = {case.name: case for case in LAYER_CASES}
    names = list(known) if cases is None else list(cases)
    for name in names:
        if name not in known:
            raise ValueError(f"unknown case {name!r}; choose from {list(known)}")
    selected = [case for case in LAYER_CASES if case.name in names or case.name in {known[n].baseline for n in names}]
    if isolate is None:
        isolate = device.startswith("cpu")
    settings = {
        "device": device,
        "dtype": dtype,
        "channels": channels,
        "heads": heads,
        "kernel_size": kernel_size,
        "height": height,
        "width": width,
        "batch": batch,
        "repeats": repeats,
        "warmup": warmup,
    }
    results: dict[str, dict] = {}
    for done, case in enumerate(selected, 1):
        row = asdict(case)
        needed = _attention_bytes(case.name, settings)
        if case.cuda_only and not device.startswith("cuda"):
            row["skipped"] = "runs on CUDA only"
        elif needed > max_attention_bytes:
            row["skipped"] = f"needs ~{needed / 2**30:.1f} GiB of attention tensors"
        elif isolate:
            try:
                row.update(run_isolated(_run_case, case.name, settings))
            except IsolatedProcessDied as error:
                row["skipped"] = str(error)
        else:
            row.update(_run_case(case.name, settings))
        results[case.name] = row
        if progress is not None:
            progress(row, done, len(selected))
    for row in results.values():
        base = results.get(row["baseline"], {})
        if "time_ms" in row and "time_ms" in base:
            row["time_ratio"] = row["time_ms"] / base["time_ms"]
            row["memory_ratio"] = row["peak_mib"] / base["peak_mib"] if base["peak_mib"] > 0 else float("nan")
    return list(results.values())


def format_layer_table(results: list[dict], device: str) -> str:
    """A plain-text table of :func:`benchmark_layers` results."""
    memory = "peak CUDA alloc" if device.startswith("cuda") else "peak RSS incr."
    header = (
        f"{'case':<16} {'input (N,C,H,W)':<20} {'fwd+bwd ms':>11} {'× base':>7} {memory + ' MiB':>20} "
        f"{'× base':>7}  {'path':<11} module"
    )
    lines = [header, "-" * len(header)]
    for row in results:
        shape = "×".join(str(s) for s in row.get("input", [])) or "-"
        if "skipped" in row:
            lines.append(
                f"{row['name']:<16} {shape:<20} {'skipped: ' + row['skipped']:>48}  {'-':<11} {row['description']}"
            )
            continue
        lines.append(
            f"{row['name']:<16} {shape:<20} {row['time_ms']:>11.1f} {row.get('time_ratio', float('nan')):>7.2f} "
            f"{row['peak_mib']:>20.1f} {row.get('memory_ratio', float('nan')):>7.2f}  {row.get('path') or '-':<11} "
            f"{row['description']}"
        )
    return "\n".join(lines)


def format_layer_progress(row: dict, done: int, total: int, seconds: float) -> str:
    """One line for a case that has just finished: ``[done/total, elapsed] name: time, memory (path)``."""
    head = f"[{done}/{total}, {seconds:.0f} s] {row['name']}"
    if "skipped" in row:
        return f"{head}: skipped ({row['skipped']})"
    path = f" ({row['path']})" if row.get("path") else ""
    return f"{head}: {row['time_ms']:.1f} ms fwd+bwd, peak {row['peak_mib']:.1f} MiB{path}"
