"""The GPU check's results file: one JSON line per result, appended as it comes, and the table printed at the end."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

__all__ = ["RESULTS_FILE", "append_result", "format_results", "read_results"]

#: The results file in the check's output folder.
RESULTS_FILE = "gpu_check.jsonl"


def append_result(path: Path, record: dict) -> None:
    with path.open("a") as file:
        file.write(json.dumps(record, default=str) + "\n")
        file.flush()
        os.fsync(file.fileno())


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
