"""The checks of a COCO json's ``categories`` section, and of a configured number of classes against it."""

from __future__ import annotations

import os
from collections.abc import Sequence

from sasa_det.data.coco.json_values import is_int
from sasa_det.data.coco.problems import DatasetError, Problem

__all__ = ["category_problems", "check_num_classes"]


def category_problems(categories: list, file: str) -> tuple[list[Problem], set[int]]:
    """Problems of the ``categories`` list (each needs an integer ``id``, unique; at least one category) and the
    ids of the valid categories."""
    problems = []
    category_ids: set[int] = set()
    for index, cat in enumerate(categories):
        if not isinstance(cat, dict) or not is_int(cat.get("id")):
            problems.append(
                Problem(
                    file, f"categories[{index}]", f"has no integer 'id': {cat!r}", "give every category an integer id"
                )
            )
        elif cat["id"] in category_ids:
            problems.append(
                Problem(
                    file, f"category id {cat['id']}", "appears twice in 'categories'", "category ids must be unique"
                )
            )
        else:
            category_ids.add(cat["id"])
    if not categories:
        problems.append(Problem(file, "", "'categories' is empty", "list at least one category"))
    return problems, category_ids


def check_num_classes(
    num_classes: int | None, class_names: Sequence[str], ann_file: str | os.PathLike, key: str = "model.num_classes"
) -> None:
    """Check a configured number of classes against the dataset's categories (in either direction).

    Args:
        num_classes: the configured value (``None`` = taken from the data; always fine).
        class_names: the dataset's category names (``CocoDataModule.class_names``).
        ann_file: the annotation file they came from (named in the message).
        key: the config key to name in the fix.

    Raises:
        DatasetError: ``num_classes`` differs from ``len(class_names)``: fewer classes would make
            labels the model cannot output; more would train classes that never occur.
    """
    found = len(class_names)
    if num_classes is None or int(num_classes) == found:
        return
    listed = ", ".join(map(str, class_names[:20])) + (", ..." if found > 20 else "")
    if num_classes < found:
        message = f"{key}={num_classes} but the dataset has {found} categories ({listed}): labels above {num_classes} would not fit the model"
    else:
        message = f"{key}={num_classes} but the dataset has only {found} categories ({listed}): {num_classes - found} output(s) would be trained on no data"
    raise DatasetError(
        f"{ann_file}: number of classes disagrees with the dataset:",
        [Problem(str(ann_file), "", message, f"set {key}={found} or null (taken from the data)")],
    )
