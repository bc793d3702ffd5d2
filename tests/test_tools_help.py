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
sys.argv = [{path!r}, *{args!r}]
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
        [sys.executable, "-c", _PROBE.format(path=path, args=["--help"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "usage:" in completed.stdout
    assert completed.stdout.strip().splitlines()[-1] == "HEAVY:", (
        f"{tool} --help imported {completed.stdout.splitlines()[-1]}"
    )


def test_converting_and_checking_a_dataset_do_not_import_torch(tmp_path):
    """The data tools' real work needs neither torch nor Lightning: they start in a fraction of a second."""
    from tests.test_data_convert import _voc_folder

    voc = _voc_folder(tmp_path / "voc")
    out = tmp_path / "all.json"
    runs = [
        (
            "convert_dataset",
            ["voc", "--annotations", str(voc / "Annotations"), "--images", str(voc / "JPEGImages"), "--out", str(out)],
        ),
        ("check_dataset", [str(out), str(voc / "JPEGImages")]),
    ]
    for tool, args in runs:
        path = str(REPO / "tools" / f"{tool}.py")
        completed = subprocess.run(
            [sys.executable, "-c", _PROBE.format(path=path, args=args)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert completed.stdout.strip().splitlines()[-1] == "HEAVY:", f"{tool} imported {completed.stdout[-200:]}"
