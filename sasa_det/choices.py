"""Option fields with a fixed set of values, declared once where the option is owned.

An options dataclass declares such a field with :func:`choice`; :mod:`sasa_det.config` finds it there and
checks every value a config file or override gives against it when the config is loaded, naming the file,
the key and the valid values. Nothing else lists the values again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Choices", "choice", "field_choices"]

#: The values a field may take: a sequence, or a function returning one (for registries that grow at run time).
Choices = Sequence[Any] | Callable[[], Sequence[Any]]

_KEY = "choices"


def choice(choices: Choices, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value (or every entry of its list value) is one of ``choices``; ``None`` always
    passes (the field's "not set")."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_KEY: choices})


def field_choices(item: dataclasses.Field) -> list[Any] | None:
    """The values ``item`` may take (``None``: any value of its type)."""
    choices = item.metadata.get(_KEY)
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)
