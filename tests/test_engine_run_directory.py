"""The run directory's owner: the layout it spells, and its refusal to replace or delete anything outside its
own folder (a resumed run that points at another run's files must leave them alone)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from sasa_det.engine.run.run_directory import OutsideRunDirectory, RunDirectory

PACKAGE = Path(__file__).resolve().parents[1] / "sasa_det"


def test_the_owner_refuses_to_delete_or_replace_outside_its_folder(tmp_path):
    other = tmp_path / "A" / "checkpoints" / "best-epoch001-step000024.ckpt"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"another run's best")
    run = RunDirectory(tmp_path / "B")
    with pytest.raises(OutsideRunDirectory, match=f"refusing to delete {other}: it is outside the run directory .*B"):
        run.delete(other)
    for action in (
        lambda: run.write_text(other, "x"),
        lambda: run.copy_in(other, other),
        lambda: run.rename(run.last_checkpoint, other),
        lambda: run.delete(tmp_path / "B" / ".." / "A" / "checkpoints" / other.name),  # a way out through ..
    ):
        with pytest.raises(OutsideRunDirectory):
            action()
    assert other.read_bytes() == b"another run's best"


def test_the_owner_writes_atomically_inside_its_folder(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.write_json(run.metrics_file, {"val/mAP": 0.5})
    assert json.loads(run.metrics_file.read_text()) == {"val/mAP": 0.5}
    source = tmp_path / "elsewhere.ckpt"
    source.write_bytes(b"weights")
    copied = run.copy_in(source, run.best_checkpoint(3, 120))
    assert copied.name == "best-epoch003-step000120.ckpt" and copied.read_bytes() == b"weights"
    assert source.read_bytes() == b"weights"

    def dies(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.write_with(run.metrics_file, dies)
    assert json.loads(run.metrics_file.read_text()) == {"val/mAP": 0.5}  # the previous file, whole
    assert sorted(p.name for p in run.root.iterdir()) == ["checkpoints", "metrics.json"]  # no temporary left
    assert run.delete(copied) and not copied.exists() and not run.delete(copied)


def _string_constants(path: Path) -> list[str]:
    """String literals of a module, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_the_layout_is_spelt_in_one_module():
    owner = PACKAGE / "engine" / "run" / "run_directory.py"
    names = ("last.ckpt", "metrics.json", "metrics.csv", "version_0", "config.yaml", "train.log", "per_class.md")
    names += ("evaluation.json", "predictions.png", "init_from_report.json", ".run.lock", "coco_summary.txt")
    spelt = {
        str(path.relative_to(PACKAGE)): [name for text in _string_constants(path) for name in names if name in text]
        for path in PACKAGE.rglob("*.py")
        if path != owner
    }
    assert {path: found for path, found in spelt.items() if found} == {}
    assert all(any(name in text for text in _string_constants(owner)) for name in names if name != "version_0")


def _file_changes(path: Path) -> list[str]:
    """Calls in ``path`` that delete, move or overwrite files themselves (not through a run directory)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        receiver, name = ast.unparse(node.func.value), node.func.attr
        through_owner = receiver.endswith("run_dir") or receiver in ("run", "out")
        direct = (
            (receiver == "os" and name in ("replace", "rename", "remove", "unlink"))
            or (receiver == "shutil" and name in ("rmtree", "move", "copyfile", "copy", "copy2"))
            or (name in ("unlink", "rmdir", "rename") and not through_owner)
        )
        if direct:
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {receiver}.{name}")
    return found


def test_only_the_owner_deletes_or_replaces_a_runs_files():
    """The engine's run, task and assembly code delete, move or overwrite nothing itself."""
    places = [PACKAGE / "engine" / "runner.py", *(PACKAGE / "engine" / "run").glob("*.py")]
    places += [*(PACKAGE / "engine" / "tasks").glob("*.py"), PACKAGE / "analysis" / "run_plots.py"]
    found = [change for path in places if path.name != "run_directory.py" for change in _file_changes(path)]
    assert found == []
    assert _file_changes(PACKAGE / "engine" / "run" / "run_directory.py")  # the scan sees the owner's own calls
