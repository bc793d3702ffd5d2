"""How an options dataclass declares the values its fields may take: fixed choices and range checks.

An options dataclass declares a field with a fixed set of values with :func:`choice`; :mod:`sasa_det.config`
finds it there and checks every value a config file or override gives against it when the config is loaded,
naming the file, the key and the valid values. Nothing else lists the values again.

Ranges and combinations of its own fields an options dataclass checks in a ``validate(self)`` method that
raises :class:`OptionError`; the config loader calls it once per section when a config is assembled and
names the full key (``model.backbone.frozen_stages``) in the message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Choices", "OptionError", "choice", "field_choices", "has_choices"]

#: The values a field may take: a sequence, or a function returning one (for registries that grow at run time).
Choices = Sequence[Any] | Callable[[], Sequence[Any]]

_KEY = "choices"


def choice(choices: Choices, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value (or every entry of its list value) is one of ``choices``; ``None`` always
    passes (the field's "not set")."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_KEY: choices})


def has_choices(item: dataclasses.Field) -> bool:
    """Whether ``item`` declares its values, without asking a registry for them."""
    return item.metadata.get(_KEY) is not None


def field_choices(item: dataclasses.Field) -> list[Any] | None:
    """The values ``item`` may take (``None``: any value of its type)."""
    choices = item.metadata.get(_KEY)
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


class OptionError(ValueError):
    """A value of an options dataclass is out of its range, raised by its ``validate()``.

    Args:
        field: the field's name, or a dotted path below the dataclass (``"tta.scales"``).
        message: what is wrong and what to set; ``{key}`` stands for the field's full config key, filled by
            whoever knows where the section sits (the config loader), or the field name alone.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.template = message
        super().__init__(message.format(key=field))

    def at(self, prefix: str) -> str:
        """The message with ``{key}`` as the full key under ``prefix`` (e.g. ``"model.backbone."``)."""
        return self.template.format(key=f"{prefix}{self.field}")
