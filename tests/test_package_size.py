"""The house's size rules: no module of the package over 500 lines, no function over 100, and the engine and
data wings at most 8 entries at their top level (modules and sub-packages)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sasa_det"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 100
MAX_WING_ENTRIES = 8


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _long_functions(source: str, limit: int) -> list[str]:
    tree = ast.parse(source)
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_module_over_500_lines_and_no_function_over_100():
    too_long = []
    for path in _modules():
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(PACKAGE.parent)
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(source.splitlines())} lines")
        too_long += [f"{name}: {what}" for what in _long_functions(source, MAX_FUNCTION_LINES)]
    assert not too_long, "\n".join(too_long)


def test_the_engine_and_data_wings_have_at_most_8_entries():
    for wing in ("engine", "data"):
        entries = [
            p.name
            for p in (PACKAGE / wing).iterdir()
            if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())
        ]
        assert len(entries) <= MAX_WING_ENTRIES, f"sasa_det/{wing}: {sorted(entries)}"


def test_the_size_check_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert _long_functions(f"def f():\n{body}\n", MAX_FUNCTION_LINES) == [f"f ({MAX_FUNCTION_LINES + 1} lines)"]
    assert _long_functions("def g():\n    return 1\n", MAX_FUNCTION_LINES) == []
