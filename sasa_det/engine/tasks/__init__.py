"""The tasks: what the config's ``task`` selects, each with its builders, LightningModule and option sections.

``get_task(name)`` returns the task object (:class:`~sasa_det.engine.tasks.task.Task`). A task's module is
imported when it is first asked for, so that its option sections (``*_options`` modules) load without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sasa_det.engine.tasks.task import Task

__all__ = ["TASK_CLASSES", "get_task"]

#: ``task`` config value -> (module, class) of the task.
TASK_CLASSES: dict[str, tuple[str, str]] = {
    "detection": ("sasa_det.engine.tasks.detection", "DetectionTask"),
    "classification": ("sasa_det.engine.tasks.classification", "ClassificationTask"),
}

_made: dict[str, Task] = {}


def get_task(name: str) -> Task:
    """The task the config value ``name`` selects (``"detection"``, ``"classification"``)."""
    if name not in TASK_CLASSES:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASK_CLASSES)}")
    if name not in _made:
        module, cls = TASK_CLASSES[name]
        _made[name] = getattr(importlib.import_module(module), cls)()
    return _made[name]
