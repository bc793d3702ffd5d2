"""C++ extensions compiled on first use into a build folder named by what the build depends on.

:func:`torch.utils.cpp_extension.load` builds into ``<root>/<python>_<cuda>/<name>`` and lets ninja decide
whether to rebuild. When the name holds only the torch version, two checkouts of a project (two clones, two
worktrees) write the same folder with different source paths and include folders, so each rebuilds what the
other built. Here the folder's name is a hash of everything the binary depends on: the source's bytes, the
compiler and linker flags, the torch build (version and commit) and the Python ABI. Checkouts with the same
source and torch share one build; a changed source or flag gets a folder of its own. The source is copied into
its folder and compiled from there, so the build never refers to a checkout.

A folder whose build finished holds a ``built`` marker beside the library; such a folder is current by
construction and its library is imported directly, without invoking the compiler or ninja. Without the marker
(first use, an interrupted build) :func:`torch.utils.cpp_extension.load` builds it under torch's file lock, and
the marker is written after the library loaded. To force a rebuild, delete the folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["ExtensionBuild", "build_root", "extension_build", "load_extension"]

#: The file that marks a finished build in its folder.
BUILT_MARKER = "built"


def build_root() -> Path:
    """Where builds go: ``TORCH_EXTENSIONS_DIR`` if set, else torch's default (``~/.cache/torch_extensions``)."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    try:  # what cpp_extension.get_default_build_root() returns, without importing it (0.4 s: it imports setuptools)
        from torch._appdirs import user_cache_dir

        return Path(os.path.realpath(user_cache_dir(appname="torch_extensions")))
    except ImportError:
        from torch.utils import cpp_extension

        return Path(cpp_extension.get_default_build_root())


@dataclass(frozen=True)
class ExtensionBuild:
    """One keyed build: the module ``name`` (prefix + key), its ``directory``, and what the key was made of."""

    name: str
    directory: Path
    inputs: dict

    @property
    def library(self) -> Path:
        """The compiled module's file."""
        return self.directory / (self.name + (".pyd" if sys.platform == "win32" else ".so"))  # as torch names it

    @property
    def is_current(self) -> bool:
        """Whether the build finished (marker and library present); such a build is never redone."""
        return (self.directory / BUILT_MARKER).is_file() and self.library.is_file()


def extension_build(
    prefix: str,
    source: str | os.PathLike,
    cflags: Sequence[str],
    ldflags: Sequence[str],
    root: str | os.PathLike | None = None,
) -> ExtensionBuild:
    """The build of ``source`` with these flags for this torch and Python: ``<root>/<prefix>_<key>``, ``key`` the
    first 16 hex digits of a SHA-256 of the source's bytes, the flags, torch's version and commit, the Python ABI
    and the machine (see the module doc). ``prefix`` must be a valid identifier (it names the module)."""
    if not prefix.isidentifier():
        raise ValueError(f"extension prefix {prefix!r} is not a Python identifier")
    inputs = {
        "source_sha256": hashlib.sha256(Path(source).read_bytes()).hexdigest(),
        "source_name": Path(source).name,
        "cflags": list(cflags),
        "ldflags": list(ldflags),
        "torch": torch.__version__,
        "torch_git": getattr(torch.version, "git_version", ""),
        "python_abi": sysconfig.get_config_var("SOABI") or sys.implementation.cache_tag,
        "machine": platform.machine(),
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{prefix}_{key}"
    return ExtensionBuild(name, Path(root if root is not None else build_root()) / name, inputs)


def _import_library(build: ExtensionBuild) -> ModuleType:
    """Import the compiled module of a finished build (torch is imported, so its libraries resolve)."""
    spec = importlib.util.spec_from_file_location(build.name, build.library)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {build.library}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, unless it already holds it (keeps its mtime)."""
    if path.is_file() and path.read_bytes() == data:
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def load_extension(
    build: ExtensionBuild, source: str | os.PathLike, cflags: Sequence[str], ldflags: Sequence[str]
) -> tuple[ModuleType, bool]:
    """``(module, compiled)``: import ``build`` if it is current (``compiled`` False), else copy ``source`` into its
    folder, compile it there with :func:`torch.utils.cpp_extension.load` and mark it finished (``compiled`` True).

    ``source``, ``cflags`` and ``ldflags`` must be those :func:`extension_build` was given. Raises what the
    build raises (no compiler, no ninja, a compile error).
    """
    if build.is_current:
        return _import_library(build), False
    from torch.utils import cpp_extension

    build.directory.mkdir(parents=True, exist_ok=True)
    copy = build.directory / build.inputs["source_name"]
    _write_if_changed(copy, Path(source).read_bytes())
    _write_if_changed(build.directory / "inputs.json", json.dumps(build.inputs, indent=1).encode())
    module = cpp_extension.load(
        name=build.name,
        sources=[str(copy)],
        extra_cflags=list(cflags),
        extra_ldflags=list(ldflags),
        build_directory=str(build.directory),
        verbose=False,
    )
    (build.directory / BUILT_MARKER).write_text(build.name + "\n")
    return module, True
