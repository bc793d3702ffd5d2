"""What the library fixed, dropped or noticed in a split, for the user: :class:`DatasetReport`.

What can be fixed safely (boxes clipped to the image, crowd regions ignored, a missing ``area`` filled in, image
modes converted, EXIF orientation applied, ...) is fixed and counted in the report, and the records that
``on_bad_records="drop"`` removed are listed in it; the data module prints it and writes it to the run
directory.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sasa_det.data.coco.problems import Problem

__all__ = ["DatasetReport"]

# Record ids quoted per line of a report.
_MAX_IDS = 5


@dataclass
class DatasetReport:
    """What the library fixed, dropped or noticed in one split, for the user.

    Attributes:
        name: split name (``train`` / ``val``) or a label.
        ann_file, image_dir: the split's files.
        counts: totals (``images``, ``annotations``, ``images_kept``, ``instances_kept``, ...).
        fixes: description of a fix -> ids of the records it was applied to.
        dropped: problems whose records were removed (``on_bad_records="drop"``, or skipped while training).
        notes: other facts worth knowing (e.g. categories that no annotation uses).
    """

    name: str
    ann_file: str
    image_dir: str
    counts: dict[str, int] = field(default_factory=dict)
    fixes: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    dropped: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fix(self, what: str, record_id: Any) -> None:
        """Record that fix ``what`` was applied to the record ``record_id``."""
        self.fixes[what].append(record_id)

    def count(self, what: str) -> int:
        """How many records fix ``what`` was applied to."""
        return len(self.fixes.get(what, ()))

    def format(self) -> str:
        """Multi-line summary: totals, then each fix and drop with its count and first record ids."""
        c = self.counts
        lines = [
            f"Dataset {self.name} ({self.ann_file}, images in {self.image_dir}): "
            f"{c.get('images_kept', 0)}/{c.get('images', 0)} images, "
            f"{c.get('instances_kept', 0)} training instances from {c.get('annotations', 0)} annotations."
        ]
        for what, ids in self.fixes.items():
            shown = ", ".join(str(i) for i in ids[:_MAX_IDS]) + (", ..." if len(ids) > _MAX_IDS else "")
            lines.append(f"  fixed: {len(ids)} x {what} ({shown})")
        if self.dropped:
            lines.append(f"  dropped {len(self.dropped)} bad record(s) (on_bad_records=drop):")
            lines += [f"    - {p}" for p in self.dropped[:_MAX_IDS]]
            if len(self.dropped) > _MAX_IDS:
                lines.append(f"    ... and {len(self.dropped) - _MAX_IDS} more (see the report file)")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetReport:
        """The report :meth:`to_dict` describes."""
        report = cls(data["name"], data["ann_file"], data["image_dir"], dict(data["counts"]))
        report.fixes.update({what: list(ids) for what, ids in data["fixes"].items()})
        report.dropped = [Problem(**problem) for problem in data["dropped"]]
        report.notes = list(data["notes"])
        return report

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (every record id, every dropped problem)."""
        return {
            "name": self.name,
            "ann_file": self.ann_file,
            "image_dir": self.image_dir,
            "counts": dict(self.counts),
            "fixes": {k: list(v) for k, v in self.fixes.items()},
            "dropped": [asdict(p) for p in self.dropped],
            "notes": list(self.notes),
        }

    def write(self, directory: str | os.PathLike) -> Path:
        """Write ``data_report_<name>.json`` (everything) and ``.txt`` (the summary) into ``directory``;
        returns the json path."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"data_report_{self.name}.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str), encoding="utf-8")
        path.with_suffix(".txt").write_text(self.format() + "\n", encoding="utf-8")
        return path
