"""The package layering: every import of ``sasa_det`` points down (or sideways within a package), none in a loop.

layers <- backbones <- detectors <- engine; data and evaluation below engine; config.py (the generic loader) and
the base modules (optim, choices, checkpoint files, logging) below everything. Inside the engine the wings stack
too: run (what a run survives) <- trainer <- tasks <- experiment (the schema) <- inference <- runner. Imports
inside functions count like any other. Inside data, the wings that read,
check and convert datasets (``coco/``, ``formats/``) import neither torch nor Lightning.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sasa_det"

# What each part of the package may import besides itself.
BELOW = {
    "base": set(),
    "layers": {"base"},
    "backbones": {"base", "layers"},
    "detectors": {"base", "layers", "backbones"},
    "data": {"base"},
    "evaluation": {"base", "data"},
    "engine": {"base", "layers", "backbones", "detectors", "data", "evaluation"},
    "analysis": {"base", "layers", "backbones", "detectors", "data", "evaluation", "engine"},
    "package": {"base", "engine"},
}
PACKAGES = {"layers", "backbones", "detectors", "data", "evaluation", "engine", "analysis"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: The engine's wings, lowest first: each may import the ones before it (and anything below the engine).
ENGINE_WINGS = ("run", "trainer", "tasks", "experiment", "inference", "runner")


def _wing(module: str) -> str | None:
    """The engine wing of a module of ``sasa_det.engine`` (None for the package's face)."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "engine" else None


def _engine_upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} ({_wing(module)}) imports {target} ({_wing(target)})"
        for module, targets in graph.items()
        for target in targets
        if _wing(module) and _wing(target) and ENGINE_WINGS.index(_wing(target)) > ENGINE_WINGS.index(_wing(module))
    ]


def _part(module: str) -> str:
    """The layer a module of ``sasa_det`` belongs to."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1] in PACKAGES:
        return parts[1]
    return "base"


def _imports(path: Path) -> set[str]:
    """The ``sasa_det`` modules (or packages) that ``path`` imports, wherever the import statement stands."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            # "from package import module" imports that module
            found |= {f"{name}.{alias.name}" for alias in node.names if _exists(f"{name}.{alias.name}")}
    return {name for name in found if name == "sasa_det" or name.startswith("sasa_det.")}


def _exists(module: str) -> bool:
    relative = Path(*module.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").is_file() or (
        PACKAGE.parent / relative / "__init__.py"
    ).is_file()


def _graph(faces: bool = True) -> dict[str, set[str]]:
    """Module -> the ``sasa_det`` modules it imports. ``faces=False`` leaves the packages' ``__init__`` out: they
    only hand on their modules' names, and every module behind a face would otherwise seem to import itself."""
    modules = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    left_out = set() if faces else {name for name, path in modules.items() if path.name == "__init__.py"}
    return {name: (_imports(path) & set(modules)) - left_out for name, path in modules.items() if name not in left_out}


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} ({_part(module)}) imports {target} ({_part(target)})"
        for module, targets in graph.items()
        for target in targets
        if _part(target) != _part(module) and _part(target) not in BELOW[_part(module)]
    ]


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    loops: list[str] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                loops.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return loops


def test_every_import_points_down_the_layers():
    upward = _upward_imports(_graph())
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_the_engine_wings_stack():
    assert set(ENGINE_WINGS) == {
        path.stem
        for path in (PACKAGE / "engine").iterdir()
        if path.name != "__init__.py" and path.suffix in ("", ".py")
    }
    upward = _engine_upward_imports(_graph())
    assert not upward, "engine imports against its wings:\n" + "\n".join(upward)
    assert _engine_upward_imports({"sasa_det.engine.run.resume": {"sasa_det.engine.experiment"}})


def test_no_module_imports_itself_through_others():
    loops = _cycles(_graph(faces=False))
    assert not loops, "import cycles:\n" + "\n".join(loops)


def test_the_checks_see_an_upward_import_and_a_cycle():
    """The checks themselves: what someone adding an upward import or a loop would meet."""
    graph = {"sasa_det.layers.resize": {"sasa_det.engine.runner"}, "sasa_det.engine.runner": set()}
    assert _upward_imports(graph) == ["sasa_det.layers.resize (layers) imports sasa_det.engine.runner (engine)"]
    assert _upward_imports({"sasa_det.config": {"sasa_det.data.coco"}})
    assert _cycles({"sasa_det.engine.a": {"sasa_det.engine.b"}, "sasa_det.engine.b": {"sasa_det.engine.a"}})
    assert _graph()["sasa_det.engine.tasks.detection_options"] >= {
        "sasa_det.layers",
        "sasa_det.choices",
    }  # a face, or not


def test_the_experiment_schema_takes_only_option_dataclasses():
    """``engine/experiment.py`` composes the sections; it takes nothing but option dataclasses (and the loader,
    the choices and the task's cross-section rule) from the code below it."""
    tree = ast.parse((PACKAGE / "engine" / "experiment.py").read_text(encoding="utf-8"))
    taken = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sasa_det.")
        for alias in node.names
    ]
    assert taken
    for module, name in taken:
        value = getattr(importlib.import_module(module), name)
        if module in ("sasa_det.choices", "sasa_det.config") or name == "check_detection_experiment":
            continue
        if module.startswith("sasa_det.engine.run") and not dataclasses.is_dataclass(value):
            continue  # read_stored_config, inside checkpoint_config
        assert dataclasses.is_dataclass(value) and isinstance(value, type), f"experiment.py imports {module}.{name}"


def test_the_data_checks_and_converters_import_neither_torch_nor_lightning():
    """Checking and converting a dataset starts in a fraction of a second: every module of ``data/coco`` and of
    ``data/formats`` imports without torch, torchvision or Lightning."""
    data = PACKAGE / "data"
    modules = [_module_name(path) for wing in ("coco", "formats") for path in sorted((data / wing).glob("*.py"))]
    assert "sasa_det.data.coco.json_checks" in modules and "sasa_det.data.formats.convert_yolo" in modules
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'pytorch_lightning') if m in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "[]", f"importing the data checks and converters loaded {completed.stdout}"
