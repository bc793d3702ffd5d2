"""Keyed C++ extension builds: the same source in two folders shares one build (not compiled again, the library
untouched), a changed source or flag gets its own folder, and the SASA kernel's build folder follows its source."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sasa_det.layers import cpp_extension_cache
from sasa_det.layers.cpp_extension_cache import extension_build, load_extension
from sasa_det.layers.local_attention import cpu as local_attention_cpu

# A plain CPython module (no torch headers: it compiles in about a second); ANSWER is edited to change the source.
TINY_SOURCE = """
#include <Python.h>
#define ANSWER 42
#define CONCAT_(a, b) a##b
#define CONCAT(a, b) CONCAT_(a, b)
#define STRING_(a) #a
#define STRING(a) STRING_(a)
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(ANSWER); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, "the answer"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, STRING(TORCH_EXTENSION_NAME), NULL, -1, methods};
PyMODINIT_FUNC CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&definition); }
"""

needs_compiler = pytest.mark.skipif(
    not local_attention_cpu.cpp_extension_available(), reason="no C++ toolchain for extensions here"
)


def _checkout(root: Path, name: str, source: str = TINY_SOURCE) -> Path:
    """A folder standing for one checkout, holding the source under the same file name as every other."""
    path = root / name / "csrc" / "tiny.cpp"
    path.parent.mkdir(parents=True)
    path.write_text(source)
    return path


def _load(source: Path, root: Path) -> tuple[str, bool, int]:
    """Load the tiny extension from the checkout holding ``source``: (build folder, compiled, its answer)."""
    build = extension_build("tiny_extension", source, ["-O1"], [], root=root)
    module, compiled = load_extension(build, source, ["-O1"], [])
    return build.directory.name, compiled, module.answer()


@needs_compiler
def test_two_checkouts_share_one_build_and_a_changed_source_gets_its_own(tmp_path):
    builds = tmp_path / "extensions"
    first, second = _checkout(tmp_path, "clone_a"), _checkout(tmp_path, "clone_b")
    local_attention_cpu._put_ninja_on_path()
    folder, compiled, answer = _load(first, builds)
    assert compiled and answer == 42
    library = extension_build("tiny_extension", first, ["-O1"], [], root=builds).library
    built_at = library.stat().st_mtime_ns
    # the other checkout, and the first one again, alternating: the library is imported, never rebuilt
    for source in (second, first, second):
        assert _load(source, builds) == (folder, False, 42)
    assert library.stat().st_mtime_ns == built_at
    assert sorted(p.name for p in builds.iterdir()) == [folder]
    # a changed source builds into a folder of its own and leaves the first build alone
    changed = _checkout(tmp_path, "branch", TINY_SOURCE.replace("ANSWER 42", "ANSWER 7"))
    other, compiled, answer = _load(changed, builds)
    assert other != folder and compiled and answer == 7
    assert _load(first, builds) == (folder, False, 42)
    assert library.stat().st_mtime_ns == built_at


def test_the_key_follows_source_flags_and_torch_not_the_folder(tmp_path, monkeypatch):
    first, second = _checkout(tmp_path, "a"), _checkout(tmp_path, "b")
    build = extension_build("tiny", first, ["-O3"], [], root=tmp_path)
    assert build.directory == extension_build("tiny", second, ["-O3"], [], root=tmp_path).directory
    assert build.directory.parent == tmp_path and build.name.startswith("tiny_")
    assert extension_build("tiny", first, ["-O2"], [], root=tmp_path).directory != build.directory
    assert extension_build("tiny", first, ["-O3"], ["-fopenmp"], root=tmp_path).directory != build.directory
    second.write_text(TINY_SOURCE + "\n// a comment is a change\n")
    assert extension_build("tiny", second, ["-O3"], [], root=tmp_path).directory != build.directory
    monkeypatch.setattr(cpp_extension_cache.torch, "__version__", "0.0.0")
    assert extension_build("tiny", first, ["-O3"], [], root=tmp_path).directory != build.directory
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "elsewhere"))
    assert extension_build("tiny", first, ["-O3"], []).directory.parent == tmp_path / "elsewhere"
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    from torch.utils import cpp_extension

    assert cpp_extension_cache.build_root() == Path(cpp_extension.get_default_build_root())


def test_an_unfinished_build_is_not_taken_as_current(tmp_path, monkeypatch):
    source = _checkout(tmp_path, "a")
    build = extension_build("tiny", source, [], [], root=tmp_path / "builds")
    build.directory.mkdir(parents=True)
    build.library.write_bytes(b"half a library")  # a build that was interrupted: no marker
    assert not build.is_current
    calls = []

    def fake_load(**kwargs):
        calls.append(kwargs)
        return "module"

    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    assert load_extension(build, source, [], []) == ("module", True)
    assert calls[0]["build_directory"] == str(build.directory) and calls[0]["name"] == build.name
    # compiled from a copy inside the build folder, so the build never refers to a checkout
    assert calls[0]["sources"] == [str(build.directory / "tiny.cpp")]
    assert (build.directory / "tiny.cpp").read_text() == TINY_SOURCE and build.is_current


@needs_compiler
def test_sasa_kernel_builds_into_the_folder_of_its_source(tmp_path):
    copy = tmp_path / "other_checkout" / "local_attention_cpu.cpp"
    copy.parent.mkdir()
    shutil.copy(local_attention_cpu._SOURCE, copy)
    flags, *rest = local_attention_cpu._build_options()
    build = extension_build(local_attention_cpu._PREFIX, local_attention_cpu._SOURCE, *flags)
    assert extension_build(local_attention_cpu._PREFIX, copy, *flags).directory == build.directory
    loaded = local_attention_cpu._load_extension()
    options = [extension_build(local_attention_cpu._PREFIX, local_attention_cpu._SOURCE, *f) for f in (flags, *rest)]
    assert Path(loaded.__file__) in [b.library for b in options if b.is_current]
