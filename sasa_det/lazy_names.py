"""A package face whose names are imported from their modules on first use (PEP 562), so that importing the
package loads nothing heavy until a name is asked for."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str, namespace: dict[str, Any], modules: Mapping[str, str]
) -> tuple[list[str], Callable, Callable]:
    """``(__all__, __getattr__, __dir__)`` of the package ``package``: ``modules`` maps a module of the package
    (relative, dotted) to the names it provides, separated by spaces; a name once imported is kept in the
    package's ``namespace``."""
    homes = {name: module for module, names in modules.items() for name in names.split()}

    def __getattr__(name: str) -> Any:
        if name in homes:
            value = getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(homes))

    return sorted(homes), __getattr__, __dir__
