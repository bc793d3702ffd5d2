"""What the COCO data pipeline costs at full scale: build time, memory of the main process and its loader workers.

:func:`benchmark_data` measures, each in a fresh process (so that one measurement's memory does not count in
the next), on a COCO-format split (typically :func:`~sasa_det.analysis.coco_sized_annotations.write_coco_sized_split`):

- ``pycocotools``: ``pycocotools.COCO(ann_file)``, the baseline: seconds and peak RSS.
- ``build``: :func:`~sasa_det.data.load_shared_records` (how the data module loads a training
  split) without the image check, into an empty cache: the json checks, the fixes and the packed records,
  in a child process: seconds and that child's peak RSS; then the same call again, read from the cache.
- ``image_check``: the header check of every image, the first time (empty cache) and cached.
- ``loader`` (and ``loader_list`` with ``compare_list=True``: the same with the split checked in the main
  process, the records as a list of Python objects and the ground truth kept as a pycocotools ``COCO``, as
  before): a training dataset over the cached records and a ``DataLoader``
  with ``workers`` workers; seconds to the first batch, then after ``batches`` batches the USS (memory only
  that process holds) of each worker and the PSS (shared pages divided among their users) of main + workers,
  read from ``/proc/<pid>/smaps_rollup`` (Linux).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["benchmark_data", "format_data_report"]


def _memory(pid: int | str = "self") -> dict[str, float]:
    """MiB of a process: ``rss``, ``peak_rss`` (VmHWM), ``pss`` and ``uss`` (private clean + dirty)."""
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.split()[0] if value.split() else ""
    rollup: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        rollup[key] = int(value.split()[0])
    return {
        "rss": int(status["VmRSS"]) / 1024,
        "peak_rss": int(status["VmHWM"]) / 1024,
        "pss": rollup["Pss"] / 1024,
        "uss": (rollup["Private_Clean"] + rollup["Private_Dirty"]) / 1024,
    }


def _pycocotools(ann_file: str) -> dict[str, float]:
    import contextlib
    import io

    from pycocotools.coco import COCO

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(ann_file)
    seconds = time.perf_counter() - start
    assert len(coco.imgs) > 0
    return {"seconds": seconds, **_memory()}


def _build(ann_file: str, image_dir: str, with_masks: bool, cache_dir: str) -> dict[str, float]:
    import resource

    from sasa_det.data import DatasetChecks, load_shared_records

    checks = DatasetChecks(check_images="off", check_cache_dir=cache_dir)
    start = time.perf_counter()
    records, _ = load_shared_records(ann_file, image_dir, checks, with_masks=with_masks, keep_empty=False)
    seconds = time.perf_counter() - start
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    start = time.perf_counter()
    load_shared_records(ann_file, image_dir, checks, with_masks=with_masks, keep_empty=False)
    cached = time.perf_counter() - start
    memory = _memory()
    return {"seconds": seconds, "cached_seconds": cached, "packed_mib": records.images.nbytes / 2**20} | {
        "peak_rss": child_peak,
        "main_rss": memory["rss"],
    }


def _image_check(ann_file: str, image_dir: str) -> dict[str, float]:
    from sasa_det.data.coco.image_file_checks import check_image_files

    names = [image["file_name"] for image in json.loads(Path(ann_file).read_text())["images"]]
    times = {}
    with tempfile.TemporaryDirectory() as cache:
        for run in ("first", "cached"):
            start = time.perf_counter()
            check_image_files(Path(image_dir), names, level="header", cache_dir=Path(cache))
            times[f"{run}_seconds"] = time.perf_counter() - start
    return times


def _loader(
    ann_file: str,
    image_dir: str,
    with_masks: bool,
    workers: int,
    batches: int,
    batch_size: int,
    as_list: bool,
    cache_dir: str,
) -> dict[str, Any]:
    import dataclasses

    import torch

    from sasa_det.data import (
        CocoDetectionDataset,
        DatasetChecks,
        build_train_transforms,
        collate_detection,
        load_checked_coco,
        load_shared_records,
    )

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # more workers than CPUs: on purpose
    start = time.perf_counter()
    checks = DatasetChecks(check_images="off", check_cache_dir=cache_dir)
    if as_list:  # as before: checked in this process, a Python list of records, the ground truth as a COCO
        records, _ = load_checked_coco(ann_file, image_dir, checks, with_masks=with_masks, keep_empty=False)
        records = dataclasses.replace(records, images=list(records.images))
    else:  # the training split as the data module loads it (checked and packed by the build step before)
        records, _ = load_shared_records(ann_file, image_dir, checks, with_masks=with_masks, keep_empty=False)
    dataset = CocoDetectionDataset(records, build_train_transforms(list(range(320, 641, 32)), 640, 0.5))
    if as_list:
        _ = dataset.coco
    main_alone = _memory()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_detection,
        generator=torch.Generator().manual_seed(0),
    )
    iterator = iter(loader)
    first = time.perf_counter()
    next(iterator)
    first_batch = time.perf_counter() - first
    for _ in range(batches - 1):
        next(iterator)
    main = _memory()
    worker_memory = [_memory(child.pid) for child in multiprocessing.active_children()]
    iterator._shutdown_workers()
    return {
        "build_seconds": first - start,
        "first_batch_seconds": first_batch,
        "main_alone": main_alone,
        "main": main,
        "workers": worker_memory,
        "total_pss": main["pss"] + sum(w["pss"] for w in worker_memory),
    }


_STEPS = {"pycocotools": _pycocotools, "build": _build, "image_check": _image_check, "loader": _loader}


def _in_fresh_process(step: str, *args) -> Any:
    """``_STEPS[step](*args)`` in a new Python process (``python -m`` this module), its result read back as JSON."""
    done = subprocess.run(
        [sys.executable, "-m", __name__, step, json.dumps(args)], stdout=subprocess.PIPE, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def benchmark_data(
    ann_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    with_masks: bool = True,
    workers: int = 4,
    batches: int = 300,
    batch_size: int = 4,
    compare_list: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure the data pipeline on one split (see the module docstring); returns the figures as a dict."""
    ann_file, image_dir = str(ann_file), str(image_dir)
    cache = tempfile.mkdtemp(prefix="sasa_det_data_benchmark_")
    loading = (with_masks, workers, batches, batch_size)
    steps = [
        ("pycocotools", "pycocotools", (ann_file,)),
        ("build", "build", (ann_file, image_dir, with_masks, cache)),
        ("image_check", "image_check", (ann_file, image_dir)),
        ("loader", "loader", (ann_file, image_dir, *loading, False, cache)),
    ]
    if compare_list:
        steps.append(("loader_list", "loader", (ann_file, image_dir, *loading, True, cache)))
    results: dict[str, Any] = {
        "settings": {
            "ann_file": ann_file,
            "annotation_mib": Path(ann_file).stat().st_size / 2**20,
            "with_masks": with_masks,
            "workers": workers,
            "batches": batches,
            "batch_size": batch_size,
            "cpus": os.cpu_count(),
        }
    }
    try:
        for name, step, args in steps:
            if progress:
                print(f"measuring {name} ...", flush=True)
            results[name] = _in_fresh_process(step, *args)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return results


def format_data_report(results: dict[str, Any]) -> str:
    """The figures of :func:`benchmark_data` as markdown, with ratios against pycocotools in the same run."""
    base, build = results["pycocotools"], results["build"]
    settings = results["settings"]
    lines = [
        f"{settings['ann_file']} ({settings['annotation_mib']:.0f} MiB), masks {settings['with_masks']}, "
        f"{settings['cpus']} CPUs",
        "",
        "| step | seconds | × pycocotools | peak RSS MiB | × pycocotools |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| pycocotools.COCO(ann_file) | {base['seconds']:.1f} | 1.00 | {base['peak_rss']:.0f} | 1.00 |",
        f"| training split checked and packed ({build['packed_mib']:.0f} MiB of records; child process) | "
        f"{build['seconds']:.1f} | {build['seconds'] / base['seconds']:.2f} | {build['peak_rss']:.0f} | "
        f"{build['peak_rss'] / base['peak_rss']:.2f} |",
        f"| the same, read from the cache (every later rank and run; RSS after it: {build['main_rss']:.0f}) | "
        f"{build['cached_seconds']:.2f} | {build['cached_seconds'] / base['seconds']:.2f} | | |",
    ]
    check = results["image_check"]
    lines.append(
        f"| image check (headers), first / cached | {check['first_seconds']:.1f} / {check['cached_seconds']:.1f} "
        "| | | |"
    )
    lines += [
        "",
        "| loader | build s | first batch s | main alone MiB (RSS) | worker USS MiB | total PSS MiB | × main alone |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name in ("loader", "loader_list"):
        if name not in results:
            continue
        row = results[name]
        uss = ", ".join(f"{w['uss']:.0f}" for w in row["workers"])
        lines.append(
            f"| {'packed records' if name == 'loader' else 'list of records + COCO (before)'} | "
            f"{row['build_seconds']:.1f} | {row['first_batch_seconds']:.2f} | {row['main_alone']['rss']:.0f} | "
            f"{uss} | {row['total_pss']:.0f} | {row['total_pss'] / row['main_alone']['rss']:.2f} |"
        )
    lines.append(
        f"\n{settings['workers']} workers, batch {settings['batch_size']}, memory read after "
        f"{settings['batches']} batches (USS: pages only that worker holds; PSS: shared pages split among users)."
    )
    return "\n".join(lines)


if __name__ == "__main__":  # one measurement step, run by _in_fresh_process
    print(json.dumps(_STEPS[sys.argv[1]](*json.loads(sys.argv[2]))))
