"""The detector zoo: every detector family trained at one budget on the hard shapes set, as one markdown table
(``tools/benchmark.py zoo``).

Each row of :data:`~sasa_det.analysis.zoo_rows.ZOO_ROWS` is a list of overrides of one base config
(``configs/zoo/shapes_hard.yaml``); each (row, seed) trains with the project's training command into its own
run directory ``OUTPUT/<row>/seed<k>/``, whose final metrics (the final weights' validation) give the mAP
and whose CSV log (``train/step_ms``) the step time. A run directory with final metrics is reused, and one with
a checkpoint but no final metrics (the table was interrupted) is continued from it, so an interrupted table
resumes. Parameters and FLOPs come from :func:`~sasa_det.analysis.config_complexity.measure_config` (the dense
part of a detector, one image).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sasa_det.analysis.zoo_rows import ZOO_ROWS
from sasa_det.engine.run.run_directory import RunDirectory

__all__ = [
    "QUICK_OVERRIDES",
    "ZooSettings",
    "format_mean_spread",
    "format_zoo_table",
    "mean_spread",
    "read_run",
    "run_zoo",
]

#: Metric keys of a run's ``metrics.json``: the bbox and mask mAP@[.5:.95].
BBOX_METRIC, SEGM_METRIC = "val/bbox/AP", "val/segm/AP"
#: The run's logged step time (:class:`~sasa_det.engine.tasks.callbacks.StepTimer`).
STEP_METRIC = "train/step_ms"
#: What ``--quick`` changes (a CI smoke check): 8 train / 4 val 64-px images, 2 steps.
QUICK_OVERRIDES = (
    "data.shapes.num_train=8",
    "data.shapes.num_val=4",
    "data.shapes.image_size=64",
    "data.min_sizes=[64]",
    "data.max_size=64",
    "model.min_size=64",
    "model.max_size=64",
    "data.batch_size=2",
    "data.val_batch_size=2",
    "data.num_workers=0",
    "trainer.log_every_n_steps=1",
    "eval.save_visualization=0",
)


def _run_record(run_dir: Path) -> Path:
    """The zoo's record of a run (the training command and its wall time): ``<row>/seed<k>.json``, beside the run
    directory, whose files only the run's owner writes."""
    return run_dir.with_suffix(".json")


@dataclass
class ZooSettings:
    """One zoo table: which rows, seeds and budget, where the runs go and how a run is trained."""

    #: the base config every row overrides
    config: Path
    #: runs go to ``output_root/<row>/seed<k>/``
    output_root: Path
    #: the training command, to which ``CONFIG overrides...`` are appended (e.g. ``[python, tools/train.py]``);
    #: None = train in this process with the runner (one job; no process start per run: --quick)
    train_command: Optional[list[str]]
    #: row names of ZOO_ROWS, in table order
    rows: list[str] = field(default_factory=lambda: list(ZOO_ROWS))
    #: training seeds 0..seeds-1 per row
    seeds: int = 2
    #: optimizer steps of every run (the equal budget)
    steps: int = 200
    #: trainings at once
    jobs: int = 1
    #: OMP_NUM_THREADS of each training command; None = cores // jobs
    threads: Optional[int] = None
    #: extra overrides of every run (``QUICK_OVERRIDES`` for --quick, where the shapes root moves too)
    extra_overrides: list[str] = field(default_factory=list)

    def run_dir(self, row: str, seed: int) -> Path:
        """The run directory of ``row`` trained with ``seed``."""
        return self.output_root / row / f"seed{seed}"

    def overrides(self, row: str) -> list[str]:
        """The config overrides that make ``row`` (without output_dir and seed)."""
        warmup = min(50, self.steps // 10)
        budget = [f"trainer.max_steps={self.steps}", f"optim.warmup_steps={warmup}"]
        return [*ZOO_ROWS[row]["overrides"], *budget, *self.extra_overrides]  # type: ignore[misc]


def mean_spread(values: Sequence[float]) -> tuple[float, Optional[float]]:
    """``(mean, spread)`` of ``values``: the spread is the sample standard deviation (n - 1), None for one value."""
    if not values:
        raise ValueError("mean_spread needs at least one value")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def format_mean_spread(values: Sequence[float], digits: int = 3) -> str:
    """``"0.412 ± 0.013"`` (mean ± sample standard deviation), ``"0.412"`` for one value, ``"-"`` for none."""
    if not values:
        return "-"
    mean, spread = mean_spread(values)
    return f"{mean:.{digits}f}" if spread is None else f"{mean:.{digits}f} ± {spread:.{digits}f}"


def _median_step_ms(run_dir: Path) -> Optional[float]:
    """Median logged step time of a run, leaving out the first logged step (warm-up) when there are others."""
    from sasa_det.analysis.run_plots import read_metrics_csv

    try:
        series = read_metrics_csv(RunDirectory(run_dir).csv_metrics).get(STEP_METRIC, [])
    except FileNotFoundError:
        return None
    values = [value for _, value in sorted(series)]
    values = values[1:] if len(values) > 1 else values
    return statistics.median(values) if values else None


def read_run(run_dir: str | os.PathLike) -> Optional[dict[str, Any]]:
    """``{"bbox", "segm", "step_ms", "seconds", "resumed"}`` of a finished run directory (None when it has no final
    metrics); ``segm`` is None for box-only detectors, ``seconds`` None for a run not trained by the zoo (for a
    continued run, the continued part only), ``resumed`` whether the zoo continued it from a checkpoint."""
    run_dir = Path(run_dir)
    metrics_path = RunDirectory(run_dir).metrics_file
    if not metrics_path.is_file():
        return None
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    record_path = _run_record(run_dir)
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    return {
        "bbox": metrics.get(BBOX_METRIC),
        "segm": metrics.get(SEGM_METRIC),
        "step_ms": _median_step_ms(run_dir),
        "seconds": record.get("seconds"),
        "resumed": bool(record.get("resumed")),
    }


def _train_in_process(config: Path, overrides: list[str], resume_from: Optional[Path]) -> Optional[str]:
    """Train (or continue from ``resume_from``) with the runner in this process; the error as a line, or None."""
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.runner import train

    try:
        train(load_config(config, overrides), resume_from=resume_from)
    except Exception as err:  # a failed row is the table's finding; the other rows go on
        return f"{type(err).__name__}: {err}"
    return None


def _train(settings: ZooSettings, row: str, seed: int, threads: int) -> dict[str, Any]:
    """Train one (row, seed) (a command's output in ``<row>/seed<k>.log``), continuing a run that an interrupted
    table left with a checkpoint but no final metrics; its results (``"resumed"`` True for such a run)."""
    run_dir = settings.run_dir(row, seed)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    overrides = [*settings.overrides(row), f"trainer.seed={seed}", f"output_dir={run_dir}"]
    unfinished = RunDirectory(run_dir).checkpoints()
    started = time.perf_counter()
    if settings.train_command is None:
        error = _train_in_process(settings.config, overrides, unfinished[0] if unfinished else None)
        command = None
    else:
        command = [*settings.train_command, str(settings.config), *overrides, *(["--resume"] if unfinished else [])]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        with open(run_dir.parent / f"seed{seed}.log", "a" if unfinished else "w", encoding="utf-8") as log:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
        error = f"exit status {done.returncode}; see {log.name}" if done.returncode != 0 else None
    seconds = time.perf_counter() - started
    if error is not None or not RunDirectory(run_dir).metrics_file.is_file():
        return {"error": error or "the run wrote no final metrics"}
    record = {"seconds": round(seconds, 1), "command": command, "overrides": overrides, "resumed": bool(unfinished)}
    _run_record(run_dir).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return read_run(run_dir) or {"error": "no final metrics"}


def _complexity(settings: ZooSettings, row: str) -> dict[str, Any]:
    """Parameters and FLOPs of ``row``'s model (cached in ``<row>/complexity.json`` by its overrides)."""
    from sasa_det.analysis.config_complexity import measure_config

    cache = settings.output_root / row / "complexity.json"
    overrides = [o for o in settings.overrides(row) if not o.startswith(("trainer.", "optim."))]
    if cache.is_file():
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if stored.get("overrides") == overrides:
            return stored
    info, _ = measure_config(settings.config, overrides)
    result = {"overrides": overrides, "params": info.params, "flops": info.flops.total, "image_size": info.image_size}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def format_progress(done: int, total: int, row: str, seed: int, run: dict[str, Any]) -> str:
    """``"[3/16] aa seed 1: mAP 0.412 in 143 s"`` (``reused``, ``resumed, ... s`` or the error)."""
    head = f"[{done}/{total}] {row} seed {seed}"
    if "error" in run:
        return f"{head}: FAILED ({run['error']})"
    segm = f", mask mAP {run['segm']:.3f}" if run.get("segm") is not None else ""
    how = "reused" if run.get("reused") else ("resumed, " if run.get("resumed") else "") + f"in {run['seconds']:.0f} s"
    return f"{head}: mAP {run['bbox']:.3f}{segm} {how}"


def run_zoo(settings: ZooSettings, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or reuse) every (row, seed) of ``settings`` and measure each row's model.

    Returns:
        ``{"settings": {...}, "rows": [{"row", "about", "params", "flops", "image_size", "runs": {seed: run}}]}``
        with each run as :func:`read_run` gives it, or ``{"error"}`` for a failed training.
    """
    unknown = [row for row in settings.rows if row not in ZOO_ROWS]
    if unknown:
        raise ValueError(f"unknown zoo row(s) {unknown}; choose from {list(ZOO_ROWS)}")
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for row in settings.rows:
        for seed in range(settings.seeds):
            found = read_run(settings.run_dir(row, seed))
            if found is not None:
                runs[row, seed] = {**found, "reused": True}
            else:
                todo.append((row, seed))
    total, done = len(settings.rows) * settings.seeds, 0
    for (row, seed), run in runs.items():
        done += 1
        progress(format_progress(done, total, row, seed, run))
    threads = settings.threads or max(1, (os.cpu_count() or 1) // settings.jobs)
    with ThreadPoolExecutor(max_workers=settings.jobs if settings.train_command is not None else 1) as pool:
        futures = {pool.submit(_train, settings, row, seed, threads): (row, seed) for row, seed in todo}
        for future in as_completed(futures):
            row, seed = futures[future]
            runs[row, seed] = future.result()
            done += 1
            progress(format_progress(done, total, row, seed, runs[row, seed]))
    table_rows = []
    for row in settings.rows:
        entry: dict[str, Any] = {"row": row, "about": ZOO_ROWS[row]["about"]}
        try:
            measured = _complexity(settings, row)
            entry.update({k: measured[k] for k in ("params", "flops", "image_size")})
        except Exception as err:  # the row's runs say why; the table shows "-"
            entry.update({"params": None, "flops": None, "image_size": None, "error": f"{type(err).__name__}: {err}"})
        entry["runs"] = {seed: runs[row, seed] for seed in range(settings.seeds)}
        table_rows.append(entry)
    described = {
        "config": str(settings.config),
        "steps": settings.steps,
        "seeds": settings.seeds,
        "jobs": settings.jobs,
        "threads": threads,
        "extra_overrides": settings.extra_overrides,
    }
    return {"settings": described, "rows": table_rows}


def _values(runs: dict[Any, dict[str, Any]], key: str) -> list[float]:
    return [float(run[key]) for run in runs.values() if run.get(key) is not None and math.isfinite(run[key])]


def format_zoo_table(results: dict[str, Any]) -> str:
    """The markdown table of :func:`run_zoo`'s results: a line per row with parameters (M), FLOPs (G, one
    image), the median CPU step time (ms, mean over seeds) and the bbox / mask mAP as mean ± sample standard
    deviation over seeds."""
    lines = [
        "| row | model | params (M) | FLOPs (G) | CPU ms/step | bbox mAP | mask mAP | seeds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in results["rows"]:
        runs = entry["runs"]
        ok = sum("error" not in run for run in runs.values())
        step_ms = _values(runs, "step_ms")
        cells = [
            entry["row"],
            entry["about"],
            f"{entry['params'] / 1e6:.2f}" if entry.get("params") is not None else "-",
            f"{entry['flops'] / 1e9:.2f}" if entry.get("flops") is not None else "-",
            f"{statistics.fmean(step_ms):.0f}" if step_ms else "-",
            format_mean_spread(_values(runs, "bbox")),
            format_mean_spread(_values(runs, "segm")),
            f"{ok}/{len(runs)}" if ok < len(runs) else str(ok),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
