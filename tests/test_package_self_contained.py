"""The installed package reaches nothing by repository path: no module of ``sasa_det`` builds a path into
``tools/`` or ``configs/``, or climbs from its own file above the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Optional

PACKAGE = Path(__file__).resolve().parents[1] / "sasa_det"
#: A string that is a relative path into the repository's tools or configs (``"tools"``, ``"configs/coco/x.yaml"``).
REPOSITORY_PATH = re.compile(r"(tools|configs)(/[\w.\-]+)*/?")


def _docstrings(tree: ast.AST) -> set[int]:
    """``id`` of every docstring constant (prose may name a tool)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _levels_up(node: ast.AST) -> Optional[int]:
    """For an expression derived from ``__file__``: ``k`` when it is the ``k``-th parent folder of the file
    (``Path(__file__).parent`` is 0), -1 for the file itself, ``None`` when it is not such an expression."""
    if isinstance(node, ast.Name):
        return -1 if node.id == "__file__" else None
    if isinstance(node, ast.Call) and node.args and getattr(node.func, "id", None) in ("Path", "PurePath"):
        return _levels_up(node.args[0])
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr in ("resolve", "absolute"):
            return _levels_up(node.func.value)
        if node.func.attr == "dirname" and node.args:
            inner = _levels_up(node.args[0])
            return None if inner is None else inner + 1
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        inner = _levels_up(node.value)
        return None if inner is None else inner + 1
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
        inner = _levels_up(node.value.value)
        if inner is not None and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int):
            return inner + 1 + node.slice.value
    return None


def reaches_outside(source: str, path: Path) -> list[str]:
    """What the module at ``path`` (inside the package) does to reach the repository around the package."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    depth = len(path.relative_to(PACKAGE).parts) - 1  # folders between the package and the module
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if REPOSITORY_PATH.fullmatch(node.value):
                found.append(f"line {node.lineno}: the repository path {node.value!r}")
        up = _levels_up(node) if isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)) else None
        if up is not None and up > depth:
            found.append(f"line {node.lineno}: {ast.unparse(node)} is a folder above the package")
    return found


def test_no_module_of_the_package_reaches_into_the_repository():
    offences = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found = reaches_outside(path.read_text(encoding="utf-8"), path)
        if found:
            offences[str(path.relative_to(PACKAGE.parent))] = found
    assert not offences, offences


def test_the_scan_finds_what_the_package_must_not_do():
    module = PACKAGE / "analysis" / "example.py"
    source = '''
"""Runs tools/train.py (prose may say so)."""
from pathlib import Path
import os
REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(__file__).parent.parent
train = [sys.executable, str(REPO / "tools" / "train.py")]
config = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "configs/coco/x.yaml")
message = "not a checkpoint written by tools/train.py"
'''
    found = reaches_outside(source, module)
    assert any("parents[2]" in f for f in found)
    assert any("'tools'" in f for f in found) and any("configs/coco/x.yaml" in f for f in found)
    assert any("dirname" in f for f in found)
    assert not any("PACKAGE_DIR" in f or ".parent.parent" in f for f in found)  # sasa_det itself
    assert not any("not a checkpoint" in f or "Runs tools" in f for f in found)
