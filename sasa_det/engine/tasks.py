"""The engine's tasks by name: what the config's ``task`` selects."""

from __future__ import annotations

from sasa_det.engine.classification_task import ClassificationTask
from sasa_det.engine.detection_task import DetectionTask
from sasa_det.engine.task import Task

__all__ = ["TASKS", "get_task"]

#: ``task`` config value -> the task.
TASKS: dict[str, Task] = {"detection": DetectionTask(), "classification": ClassificationTask()}


def get_task(name: str) -> Task:
    """The task the config value ``name`` selects (``"detection"``, ``"classification"``)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]
