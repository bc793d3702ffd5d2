"""Choosing among the SASA kernel candidates by timing them on the first inputs of each shape class.

Forward and backward are tuned separately (each backward candidate runs its own pair of kernels). A
shape class is the device, dtype, head width, window, border mode and the map's height and width
rounded up to powers of two, so a multi-scale training tunes a few times, not once per size. The
candidates are first compiled side by side in threads (Triton's compiler releases the GIL; on a 2-core
machine 12 kernels took 5.0 s instead of 9.5 s), then each runs once and is timed over
:data:`TIMED_RUNS` launches (CUDA events, median);
the choice is logged once per class at INFO and listed by :func:`autotune_report`. Off CUDA (Triton's
interpreter) and where only one candidate exists, the first candidate runs untimed.

Candidates compute the same result up to rounding, so running them all on the real tensors is safe: the
chosen one runs last and its results are what the caller keeps.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from .triton_configs import LaunchConfig

logger = logging.getLogger(__name__)

__all__ = ["TIMED_RUNS", "autotune_report", "choose_config", "map_class", "shape_class"]

#: Timed launches per candidate after its first (compiling) run.
TIMED_RUNS = 3

_choices: dict[tuple, dict] = {}


def map_class(height: int, width: int) -> list[int]:
    """The map size a shape class stands for: height and width rounded up to powers of two."""
    return [1 << max(height - 1, 0).bit_length(), 1 << max(width - 1, 0).bit_length()]


def shape_class(
    stage: str,
    x: torch.Tensor,
    head_width: int,
    kernel_size: int,
    mask_padding: bool,
    height: int,
    width: int,
    candidates: Sequence[LaunchConfig],
) -> tuple:
    """The key under which a choice is remembered."""
    return (
        stage,
        str(x.device),
        str(x.dtype),
        head_width,
        kernel_size,
        bool(mask_padding),
        max(height - 1, 0).bit_length(),
        max(width - 1, 0).bit_length(),
        tuple(c.label for c in candidates),
    )


def _time(run: Callable[[LaunchConfig], None], config: LaunchConfig, device: torch.device) -> float:
    run(config)  # compiles on first use
    times = []
    for _ in range(TIMED_RUNS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(config)
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _compile_side_by_side(candidates: Sequence[LaunchConfig], run: Callable[..., None]) -> None:
    """Compile every candidate's kernels in parallel threads (``run(config, compile_only=True)``); a failure
    here is left for the candidate's own run to raise or compile again."""
    workers = min(len(candidates), os.cpu_count() or 1)
    if workers < 2:
        return
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(run, config, compile_only=True) for config in candidates]:
            try:
                future.result()
            except Exception as error:  # e.g. an older Triton without warmup(): compiled at first launch instead
                logger.info(
                    "SASA Triton: compiling the candidates side by side failed (%s: %s); each compiles at "
                    "its first launch instead",
                    type(error).__name__,
                    error,
                )
                return


def choose_config(
    key: tuple, candidates: Sequence[LaunchConfig], run: Callable[[LaunchConfig], None], device: torch.device
) -> LaunchConfig:
    """The candidate for ``key``; times them all (``run(config)`` launches one, ``run(config, compile_only=True)``
    only compiles it) the first time on CUDA.

    The caller launches the returned config itself afterwards.
    """
    if key in _choices:
        return _choices[key]["config"]
    if len(candidates) == 1 or device.type != "cuda":
        return candidates[0]
    _compile_side_by_side(candidates, run)
    timings = {config: _time(run, config, device) for config in candidates}
    best = min(timings, key=timings.get)
    _choices[key] = {"config": best, "ms": {config.label: round(ms, 4) for config, ms in timings.items()}}
    stage, device_name, dtype, head_width = key[:4]
    logger.info(
        "SASA Triton %s, %s %s d=%d, map up to %dx%d: %s (%s)",
        stage,
        device_name,
        dtype,
        head_width,
        2 ** key[6],
        2 ** key[7],
        best.label,
        ", ".join(f"{label} {ms:.3f} ms" for label, ms in _choices[key]["ms"].items()),
    )
    return best


def autotune_report() -> list[dict]:
    """Every choice so far: stage, device, dtype, head width, map class, the chosen config and all timings (ms)."""
    return [
        {
            "stage": key[0],
            "device": key[1],
            "dtype": key[2],
            "head_width": key[3],
            "kernel_size": key[4],
            "mask_padding": key[5],
            "map_class": [2 ** key[6], 2 ** key[7]],
            "chosen": entry["config"].label,
            "path": entry["config"].path,
            "ms": entry["ms"],
        }
        for key, entry in _choices.items()
    ]
