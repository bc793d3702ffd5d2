"""Running the GPU check: every section in a fresh Python process with its own timeout, within a time budget."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from .results import RESULTS_FILE, append_result, read_results
from .sections import SECTIONS, Section

__all__ = ["run_gpu_check"]

#: The module a section's process runs (``python -m``): :mod:`sasa_det.analysis.gpu_check.__main__`.
SECTION_MODULE = "sasa_det.analysis.gpu_check"


def _import_root() -> str:
    """The folder ``sasa_det`` is imported from (a clone's root when it is not installed), for the children."""
    return str(Path(importlib.util.find_spec("sasa_det").origin).parent.parent)


def _child_environment(out: Path, section: str, dry_run: bool) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if dry_run and section == "correctness_sasa":
        env["TRITON_INTERPRET"] = "1"  # the Triton kernels on CPU tensors (set before triton is imported)
    caches = out / "caches"
    env.setdefault("TRITON_CACHE_DIR", str(caches / "triton"))
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(caches / "inductor"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_import_root(), env.get("PYTHONPATH")]))
    return env


def _run_child(section: Section, out: Path, dry_run: bool, train_config: Optional[str], timeout: float) -> dict:
    """Run ``section`` in its own process; its status line (``ok``, ``failed``, ``crashed``, ``timeout``)."""
    command = [sys.executable, "-m", SECTION_MODULE, "--section", section.name, "--out", str(out)]
    if dry_run:
        command.append("--dry-run")
    if train_config:
        command += ["--train-config", str(train_config)]
    started = time.perf_counter()
    env = _child_environment(out, section.name, dry_run)
    try:
        child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        stderr = expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) else expired.stderr
        return {
            "section": section.name,
            "status": "timeout",
            "seconds": round(timeout, 1),
            "error": "\n".join((stderr or "").strip().splitlines()[-5:]),
        }
    record = {
        "section": section.name,
        "status": "ok" if child.returncode == 0 else ("crashed" if child.returncode < 0 else "failed"),
        "seconds": round(time.perf_counter() - started, 1),
        "returncode": child.returncode,
    }
    if child.returncode != 0:
        record["error"] = "\n".join(child.stderr.strip().splitlines()[-15:])
    return record


def run_gpu_check(
    out: str | os.PathLike,
    dry_run: bool = False,
    sections: list[str] | None = None,
    budget_s: float = 470.0,
    progress: Callable[[str], None] = print,
    train_config: str | os.PathLike | None = None,
) -> list[dict]:
    """Run the sections (all, or the named ones) each in a fresh process; returns every result line.

    A section gets its own timeout, cut to what is left of ``budget_s``; sections that would start with
    less than 20 s left are marked skipped. ``<out>/gpu_check.jsonl`` is started afresh. ``train_config`` is
    the experiment YAML the ``train_eval`` section trains briefly (without it that section trains nothing
    and says so).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    path.write_text("")
    chosen = [s for s in SECTIONS if sections is None or s.name in sections]
    unknown = sorted(set(sections or ()) - {s.name for s in SECTIONS})
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {[s.name for s in SECTIONS]}")
    config = None if train_config is None else str(Path(train_config).resolve())
    started = time.perf_counter()
    for section in chosen:
        left = budget_s - (time.perf_counter() - started)
        if left < 20:
            reason = f"time budget of {budget_s:.0f} s spent"
            append_result(path, {"section": section.name, "status": "skipped", "reason": reason})
            progress(f"{section.name}: skipped (time budget spent)")
            continue
        timeout = min(section.timeout_s, left)
        progress(f"{section.name}: running (timeout {timeout:.0f} s)")
        record = _run_child(section, out, dry_run, config, timeout)
        append_result(path, record)
        progress(f"{section.name}: {record['status']} in {record['seconds']:.0f} s")
    return read_results(path)
