"""Every command-line tool answers ``--help`` without importing torch (arguments are parsed before any heavy
import, so a mistyped flag or ``--help`` answers at once)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = sorted(p.stem for p in (REPO / "tools").glob("*.py"))

_PROBE = """
import runpy, sys
sys.argv = [{path!r}, "--help"]
try:
    runpy.run_path({path!r}, run_name="__main__")
except SystemExit as stop:
    assert stop.code in (0, None), stop.code
heavy = sorted(m for m in ("torch", "torchvision", "pytorch_lightning") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("tool", TOOLS)
def test_help_does_not_import_torch(tool):
    path = str(REPO / "tools" / f"{tool}.py")
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE.format(path=path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "usage:" in completed.stdout
    assert completed.stdout.strip().splitlines()[-1] == "HEAVY:", (
        f"{tool} --help imported {completed.stdout.splitlines()[-1]}"
    )
