"""Timing and peak-memory helpers shared by the benchmarks.

Memory: on CUDA the increase of ``torch.cuda.max_memory_allocated`` over the memory held before the
measured call; on CPU the increase of the process's peak resident set size (``ru_maxrss``) over the
resident size before it, which is only meaningful in a fresh process (:func:`run_isolated`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

__all__ = [
    "IsolatedProcessDied",
    "background_load",
    "median_seconds",
    "peak_memory_bytes",
    "run_isolated",
    "synchronize",
]


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work on ``device`` (nothing to do on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def peak_memory_bytes(step: Callable[[], Any], device: torch.device) -> int:
    """Memory that one call of ``step`` needs beyond what is held before it (see the module doc)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    before = _rss_bytes()
    step()
    return max(0, _peak_rss_bytes() - before)


def median_seconds(step: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class IsolatedProcessDied(RuntimeError):
    """The fresh process of :func:`run_isolated` ended without a result (killed, e.g. for lack of memory)."""


def _fresh_process_context() -> multiprocessing.context.BaseContext:
    """``forkserver`` where there is one (a server that has imported torch once forks each fresh process, so
    none pays torch's import), else ``spawn``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def run_isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh process (``fn`` must be importable); returns its result.

    Raises :class:`IsolatedProcessDied` when the process dies without one (the out-of-memory killer ends a case
    that needs more memory than the machine has), instead of waiting for it forever.
    """
    context = _fresh_process_context()
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["torch", fn.__module__])
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool as error:
            raise IsolatedProcessDied(
                f"the process running {fn.__name__}{args!r:.80} died without a result (killed for lack of memory?)"
            ) from error


def _train_convolutions_forever(threads: int) -> None:
    """A stand-in for a second training on the same cores: 3×3 conv forward+backward in a loop."""
    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(2, 64, 96, 160, requires_grad=True)
    while True:
        conv(x).sum().backward()


@contextlib.contextmanager
def background_load(threads: int) -> Iterator[None]:
    """Run a busy training-like process with ``threads`` intra-op threads while the block runs."""
    process = multiprocessing.get_context("spawn").Process(
        target=_train_convolutions_forever, args=(threads,), daemon=True
    )
    process.start()
    try:
        time.sleep(2.0)  # let it start and reach its loop
        yield
    finally:
        process.terminate()
        process.join()
