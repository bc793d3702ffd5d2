"""The documentation is checked against the code: every ``tools/<name>.py --flag`` written in README.md and
docs/*.md is an option of that tool's parser (of the subcommand it names), every relative link (``[x](path)``,
``![x](path)``, with or without ``#anchor``) resolves to a file of the repository and its anchor to a heading
of that file, and every ``make <target>`` is a target of the Makefile.

The tools' parsers are built without running the tools: each tool module imports only ``sasa_det.cli`` at its
top, and while the tool's ``parse_args`` (or ``main``) runs, ``argparse.ArgumentParser``'s parse methods raise
with the parser that called them, so the parser is captured at the moment it would parse and nothing else runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_TOOL = re.compile(r"(?<![\w/.-])tools/(\w+)\.py\b")
_FLAG = re.compile(r"(?<![\w./=-])--([A-Za-z][\w-]*)")
_MAKE = re.compile(r"(?<![\w./-])make\s+([A-Za-z][\w-]*)")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
_PARSE_METHODS = ("parse_args", "parse_known_args", "parse_intermixed_args", "parse_known_intermixed_args")
_SEPARATORS = re.compile(r"\s(?:&&|\|\||;|\|)\s|;\s*$")


class _Captured(Exception):
    """Raised instead of parsing: carries the parser a tool built."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__(parser.prog)
        self.parser = parser


@cache
def tool_parser(name: str) -> argparse.ArgumentParser:
    """The argument parser of ``tools/<name>.py``, captured when the tool would parse its arguments."""
    path = REPO / "tools" / f"{name}.py"
    if not path.is_file():
        raise LookupError(f"tools/{name}.py does not exist")
    spec = importlib.util.spec_from_file_location(f"_docs_checked_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    build = getattr(module, "parse_args", None) or module.main

    def capture(parser, args=None, namespace=None):
        raise _Captured(parser)

    originals = {name: getattr(argparse.ArgumentParser, name) for name in _PARSE_METHODS}
    for name in _PARSE_METHODS:
        setattr(argparse.ArgumentParser, name, capture)
    try:
        build([])
    except _Captured as captured:
        return captured.parser
    finally:
        for name, method in originals.items():
            setattr(argparse.ArgumentParser, name, method)
    raise LookupError(f"tools/{name}.py built no argument parser")


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings if option.startswith("--")}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def flag_problem(tool: str, words: list[str]) -> str | None:
    """What is wrong with the words written after ``tools/<tool>.py`` (None: every ``--flag`` exists)."""
    try:
        parser = tool_parser(tool)
    except LookupError as missing:
        return str(missing)
    flags = [match.group(1) for word in words for match in _FLAG.finditer(word)]
    allowed = _long_options(parser)
    subcommands = _subcommands(parser)
    if subcommands:
        first = next((word for word in words if not word.startswith(("-", "["))), "")
        named = [part for part in first.split("|") if part in subcommands]
        if named:  # a flag must exist in every subcommand named (``layers|model`` names two)
            allowed |= set.intersection(*(_long_options(subcommands[name]) for name in named))
    unknown = [f"--{flag}" for flag in flags if f"--{flag}" not in allowed]
    if unknown:
        return f"tools/{tool}.py has no option {', '.join(unknown)} (it has: {', '.join(sorted(allowed))})"
    return None


def code_texts(markdown: str) -> list[str]:
    """The commands written in a page: fenced blocks (continued lines joined, shell comments removed) and inline
    code spans, each split at ``&&``, ``;`` and pipes."""
    texts = []
    for block in _FENCE.findall(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            texts.append(re.sub(r"(^|\s)#.*$", "", line))
    texts += _INLINE_CODE.findall(_FENCE.sub("", markdown))
    return [part for text in texts for part in _SEPARATORS.split(text) if part.strip()]


def tool_invocations(markdown: str) -> list[tuple[str, list[str], str]]:
    """Each ``tools/<name>.py`` written in code with the words after it: (name, words, the command)."""
    found = []
    for text in code_texts(markdown):
        matches = list(_TOOL.finditer(text))
        for match, following in zip(matches, [*matches[1:], None]):
            rest = text[match.end() : following.start() if following else len(text)]
            found.append((match.group(1), rest.split(), text.strip()))
    return found


def makefile_targets() -> set[str]:
    """Every target of the Makefile (rule names before ``:``, not ``:=`` assignments)."""
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_./ -]+?)\s*::?(?!=)", line)
        if rule and not line.startswith((" ", "\t", ".PHONY")):
            targets.update(rule.group(1).split())
    return targets


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lower-cased, without punctuation, spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    kept = "".join(char for char in text if char in " -_" or unicodedata.category(char)[0] in "LMN")
    return kept.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors of a Markdown file's headings (a repeated heading gets ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    for _, text in _HEADING.findall(_FENCE.sub("", path.read_text())):
        slug = github_slug(text)
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return frozenset(seen)


def link_problems(page: Path, markdown: str) -> list[str]:
    """Relative links of a page whose file (or heading) does not exist."""
    prose = _INLINE_CODE.sub("code", _FENCE.sub("", markdown))
    problems = []
    for target in _LINK.findall(prose):
        if re.match(r"^[A-Za-z][\w+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if REPO not in path.parents and path != REPO:
            problems.append(f"{target}: outside the repository")
        elif not path.exists():
            problems.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(f"{target}: {path.name} has no heading with the anchor #{anchor}")
    return problems


def make_problems(markdown: str) -> list[str]:
    """``make <target>`` written in code whose target the Makefile lacks."""
    targets = makefile_targets()
    named = {target for text in code_texts(markdown) for target in _MAKE.findall(text)}
    return [f"make {target}: no such Makefile target" for target in sorted(named - targets)]


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


@pytest.mark.parametrize("page", DOC_FILES, ids=_page_id)
def test_every_tool_flag_written_exists(page):
    problems = [
        f"{problem}, in: {command}"
        for tool, words, command in tool_invocations(page.read_text())
        if (problem := flag_problem(tool, words))
    ]
    assert not problems, f"{_page_id(page)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", DOC_FILES, ids=_page_id)
def test_every_relative_link_resolves(page):
    problems = link_problems(page, page.read_text())
    assert not problems, f"{_page_id(page)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", DOC_FILES, ids=_page_id)
def test_every_make_target_exists(page):
    problems = make_problems(page.read_text())
    assert not problems, f"{_page_id(page)}:\n" + "\n".join(problems)


def test_the_readme_names_the_two_commands_and_links_the_pages():
    """The front door keeps its two commands (CI runs ``make test``) and reaches every page of docs/."""
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    linked = {(REPO / target.partition("#")[0]).resolve() for target in _LINK.findall(readme)}
    unlinked = [_page_id(page) for page in DOC_FILES[1:] if page.resolve() not in linked]
    assert not unlinked, f"README.md links none of: {unlinked}"


def test_the_checks_catch_a_wrong_flag_a_broken_link_and_an_unknown_target():
    """The checks above can fail: a page with one mistake of each kind is reported, a correct one is not."""
    wrong = (
        "```bash\n.venv/bin/python tools/train.py configs/shapes_demo.yaml \\\n    --resumee outputs/x\n```\n"
        "Run `python tools/convert_dataset.py voc --split-files LIST.txt` or `tools/nonexistent.py --x`,\n"
        "`tools/convert_dataset.py split --classes a,b` (a flag of `voc`... no: of `yolo`), `make demoo`.\n"
        "See [the configs](docs/no_such_page.md), ![a picture](docs/images/none.png), "
        "[a heading](README.md#no-such-heading).\n"
    )
    flagged = [flag_problem(tool, words) for tool, words, _ in tool_invocations(wrong)]
    assert len(flagged) == 4 and all(flagged), flagged
    assert "--resumee" in flagged[0] and "--split-files" in flagged[1] and "does not exist" in flagged[2]
    assert "--classes" in flagged[3]
    assert len(link_problems(REPO / "README.md", wrong)) == 3
    assert make_problems(wrong) == ["make demoo: no such Makefile target"]

    right = (
        "```bash\nOMP_NUM_THREADS=1 .venv/bin/python tools/train.py --resume outputs/x  # --not-a-flag\n"
        'make extras EXTRAS="onnx video" && python tools/benchmark.py layers --full\n```\n'
        "`tools/convert_dataset.py voc --split-file LIST.txt`, [layout](docs/architecture.md#packages), "
        "[up](#sasa_det), [site](https://example.org/x.md).\n"
    )
    assert [flag_problem(tool, words) for tool, words, _ in tool_invocations(right)] == [None, None, None]
    assert make_problems(right) == []
    assert link_problems(REPO / "README.md", right) == []
