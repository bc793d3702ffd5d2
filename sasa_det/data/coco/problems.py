"""What is wrong with a dataset, and how it is raised: :class:`Problem`, :class:`DatasetError`.

Every check of a split (the json's sections, the image files) reports a :class:`Problem` that names the file,
the record and the fix; all of them are collected before anything is raised, so one run lists every problem.
What cannot be fixed safely raises :class:`DatasetError` (a ``ValueError``) listing them all
(:func:`raise_if_problems`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DatasetError", "Problem", "raise_if_problems"]

# Problems quoted in an exception message; the full list goes to a file.
_MAX_LISTED = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Attributes:
        file: the annotation file or the image file concerned.
        record: which record (``"annotation id 10 (image id 3)"``, ``"image id 3"``, ``""`` for the file).
        message: what is wrong.
        fix: what the user should do.
        section: ``"images"`` / ``"annotations"`` when dropping the record at ``index`` of that list
            removes the problem; ``None`` when nothing can be dropped (e.g. a duplicate category id).
        index: position of the record in its section.
    """

    file: str
    record: str
    message: str
    fix: str
    section: str | None = None
    index: int = -1

    def __str__(self) -> str:
        where = f"{self.file}: {self.record}" if self.record else self.file
        return f"{where}: {self.message}; fix: {self.fix}"


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message lists every problem with file, record and fix.

    Attributes:
        problems: all problems found (the message quotes the first ``20``).
        full_list: file holding every problem, one a line (written when the list was cut).
    """

    def __init__(self, headline: str, problems: Sequence[Problem] = (), full_list: Path | None = None) -> None:
        self.headline = headline
        self.problems = list(problems)
        self.full_list = full_list
        lines = [headline]
        lines += [f"  - {p}" for p in self.problems[:_MAX_LISTED]]
        if len(self.problems) > _MAX_LISTED:
            rest = len(self.problems) - _MAX_LISTED
            lines.append(f"  ... and {rest} more" + (f"; the full list is in {full_list}" if full_list else ""))
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its problems (an error raised in a child process reaches the parent whole)."""
        return (type(self), (self.headline, self.problems, self.full_list))


def raise_if_problems(
    problems: Sequence[Problem], what: str, report_dir: str | os.PathLike | None, hint: str = ""
) -> None:
    """Raise :class:`DatasetError` listing ``problems`` (if any); a list longer than the message can
    quote is written in full to ``report_dir`` (or the temporary folder) and the message names the file."""
    if not problems:
        return
    full_list = None
    if len(problems) > _MAX_LISTED:
        folder = Path(report_dir) if report_dir is not None else Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        full_list = folder / f"dataset_problems_{Path(what).stem}.txt"
        full_list.write_text("\n".join(str(p) for p in problems) + "\n", encoding="utf-8")
    headline = f"{what}: {len(problems)} problem(s) found before training{hint}:"
    raise DatasetError(headline, problems, full_list)
