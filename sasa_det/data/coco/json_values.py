"""What the json checks accept as a value: ints that are not bools, finite numbers, lists of them; and the problem
of a record without an integer id."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from sasa_det.data.coco.problems import Problem

__all__ = ["all_finite_numbers", "all_natural_numbers", "is_int", "is_number", "no_integer_id", "records_with_ids"]


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_NUMBER_TYPES = {int, float}


def all_finite_numbers(values: Any) -> bool:
    """Whether every item of a list is a finite int or float (not a bool); the common case is checked in C
    (the items' types, then one sum), only a list that fails it is checked item by item."""
    if set(map(type, values)) <= _NUMBER_TYPES and math.isfinite(sum(values)):
        return True
    return all(is_number(v) for v in values)


def all_natural_numbers(values: list) -> bool:
    """Whether every item is an int >= 0 (not a bool), checked in C for the common case."""
    if set(map(type, values)) <= {int}:
        return not values or min(values) >= 0
    return all(is_int(v) and v >= 0 for v in values)


def no_integer_id(file: str, section: str, index: int, record: Any) -> Problem:
    """The problem of the record at ``index`` of ``section`` (``images`` / ``annotations``) that has no integer
    ``id`` (dropping the record removes it)."""
    return Problem(
        file,
        f"{section}[{index}]",
        f"has no integer 'id': {str(record)[:80]}",
        f"give every {section[:-1]} an integer id",
        section,
        index,
    )


def records_with_ids(
    records: list, file: str, section: str, problems: list[Problem], positions: dict[int, list[int]]
) -> Iterator[tuple[int, dict]]:
    """``(index, record)`` for each record of ``section`` that is a dict with an integer ``id``; the others become
    problems (appended to ``problems``), and ``positions`` gathers every id's positions in the list."""
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not is_int(record.get("id")):
            problems.append(no_integer_id(file, section, index, record))
            continue
        positions[record["id"]].append(index)
        yield index, record
