"""The generic config loader: YAML files with ``_base_`` inheritance, command-line overrides, checked against a
schema of option dataclasses.

A schema is a dataclass whose fields are the sections of a config, each an option dataclass declared beside
the code that consumes it (the experiment schemas are composed in :mod:`sasa_det.engine.experiment`). It is
used as an OmegaConf structured config, so a misspelt or unknown key is an error that names the key and the
file (or command-line override) it came from, with the closest known key, and a value of the wrong type is
rejected the same way.

A YAML file may start with ``_base_: path`` or ``_base_: [path, ...]`` (paths relative to that file).
Bases are loaded recursively and merged in order, then the file itself is merged on top; mappings merge
key by key (also free-form dicts), lists and scalars are replaced. Command-line overrides
(``optim.lr=0.02``, ``trainer.devices=2``, ``data.min_sizes=[96,128]``) are applied last.

Every value is validated once, when it is read: the type by the schema; a value with a fixed set of
choices, which the owning dataclass declares with :func:`sasa_det.choices.choice`, as each file or override
is read (naming the key, the file, the valid choices and the closest one); ranges and combinations once
the config is assembled, by each option dataclass's own ``validate()`` (:class:`sasa_det.choices.OptionError`).
A string given for a section whose dataclass has a ``name`` field is shorthand for ``{name: value}``
(``model.backbone: resnet50``). A key that was renamed (an option dataclass's ``renamed_keys``) is still
read, with a ``FutureWarning`` naming its new key. A stored config (a checkpoint's) that predates a key gets the
value it trained with (an option dataclass's ``added_keys``), not the key's default today.

The schema may depend on the config itself (the experiment's ``task`` selects its sections): pass a function
from the raw, unchecked config to the schema.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from sasa_det.choices import OptionError, field_choices, has_choices

__all__ = [
    "ConfigError",
    "Schema",
    "apply_overrides",
    "choice_table",
    "config_from_dict",
    "config_to_dict",
    "config_yaml",
    "load_config",
    "read_raw_config",
    "save_config",
    "validate_options",
]

BASE_KEY = "_base_"

#: A schema dataclass, or a function choosing one from the raw (unchecked, merged) config.
Schema = Union[type, Callable[[DictConfig], type]]


class ConfigError(ValueError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value, include cycle)."""


def _option_fields(schema: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """``(full key, field, its type)`` for every key of the schema, the keys of nested option dataclasses too."""
    hints = typing.get_type_hints(schema)
    for item in dataclasses.fields(schema):
        key = f"{prefix}{item.name}"
        yield key, item, hints[item.name]
        if dataclasses.is_dataclass(hints[item.name]):
            yield from _option_fields(hints[item.name], f"{key}.")


def choice_table(schema: type) -> dict[str, dataclasses.Field]:
    """Keys whose option declares its values (:func:`sasa_det.choices.choice`) -> the option's field."""
    return {key: item for key, item, _ in _option_fields(schema) if has_choices(item)}


def _renamed_keys(schema: type) -> dict[str, str]:
    """Former keys -> their keys now, from the ``renamed_keys`` that option dataclasses declare."""
    return {
        f"{key}.{old}": f"{key}.{new}"
        for key, _, kind in _option_fields(schema)
        for old, new in getattr(kind, "renamed_keys", {}).items()
    }


def _rename_deprecated_keys(node: DictConfig, origin: str, schema: type) -> DictConfig:
    """Move the values of former keys in ``node`` (one file or override) to their keys now, with a
    ``FutureWarning`` naming both (in place; returns ``node``). A former key set to null is dropped."""
    for old, new in _renamed_keys(schema).items():
        parent_key, _, leaf = old.rpartition(".")
        parent = OmegaConf.select(node, parent_key, default=None)
        if not isinstance(parent, DictConfig) or leaf not in parent:
            continue
        value = parent.pop(leaf)
        if value is None:
            continue
        if OmegaConf.select(node, new, default=None) is not None:
            raise ConfigError(f"{origin}: {old} is the former name of {new} and both are set; keep {new}")
        warnings.warn(f"{origin}: {old} is deprecated; use {new}", FutureWarning, stacklevel=2)
        OmegaConf.update(node, new, value, force_add=True)
    return node


def _fill_added_keys(stored: DictConfig, schema: type) -> DictConfig:
    """Give keys added after ``stored`` was written (absent from a section it holds) the value that reproduces
    what it trained, from the ``added_keys`` that option dataclasses declare (in place; returns ``stored``)."""
    for key, _, kind in _option_fields(schema):
        section = OmegaConf.select(stored, key, default=None)
        if not isinstance(section, DictConfig):
            continue
        for leaf, former in getattr(kind, "added_keys", {}).items():
            if leaf not in section:
                section[leaf] = former
    return stored


def _check_choices(node: DictConfig, origin: str, schema: type) -> None:
    """Raise ConfigError for any key of ``node`` whose value (or list entry) is not one of its choices."""
    for key, item in choice_table(schema).items():
        value = OmegaConf.select(node, key, default=None, throw_on_missing=False)
        if value is None:
            continue
        values = list(value) if isinstance(value, ListConfig) else [value]
        valid = field_choices(item)
        bad = [v for v in values if v not in valid]
        if bad:
            hint = difflib.get_close_matches(str(bad[0]), [str(v) for v in valid], n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{origin}: {key}={bad[0]!r} is not one of {valid}{suggestion}")


def _named_sections(schema: type) -> list[str]:
    """Keys of sections whose dataclass has a ``name`` field (a string value there is ``{name: value}``)."""
    return [
        key
        for key, _, kind in _option_fields(schema)
        if dataclasses.is_dataclass(kind) and "name" in {f.name for f in dataclasses.fields(kind)}
    ]


def _expand_shorthands(node: DictConfig, schema: type) -> DictConfig:
    """``section: NAME`` -> ``section: {name: NAME}`` for sections with a ``name`` field (in place; returns ``node``)."""
    for key in _named_sections(schema):
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(node, parent_key, default=None) if parent_key else node
        if isinstance(parent, DictConfig) and isinstance(parent.get(leaf), str):
            parent[leaf] = {"name": parent[leaf]}
    return node


def _known_keys(schema: DictConfig, full_key: str) -> list[str]:
    """Keys that exist next to ``full_key`` in the schema (for a 'did you mean' hint)."""
    parent_path = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node = OmegaConf.select(schema, parent_path) if parent_path else schema
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _closest_key(leaf: str, known: list[str]) -> Optional[str]:
    """The known key ``leaf`` most likely meant: the closest spelling, or the key its words abbreviate
    (``learning_rate`` -> ``lr``)."""
    close = difflib.get_close_matches(leaf, known, n=1)
    if close:
        return close[0]
    initials = "".join(word[0] for word in leaf.split("_") if word)
    return initials if len(initials) > 1 and initials in known else None


def _merge_checked(base: DictConfig, update: DictConfig, origin: str) -> DictConfig:
    """Merge ``update`` onto ``base`` (a structured config), raising ConfigError naming ``origin``."""
    try:
        return OmegaConf.merge(base, update)
    except ConfigKeyError as err:
        full_key = str(getattr(err, "full_key", "") or getattr(err, "key", ""))
        hint = _closest_key(full_key.rsplit(".", 1)[-1], _known_keys(base, full_key))
        suggestion = f"; did you mean {hint!r}?" if hint else ""
        raise ConfigError(f"{origin}: unknown config key {full_key!r}{suggestion}") from None
    except OmegaConfBaseException as err:
        full_key = getattr(err, "full_key", None)
        message = str(err).splitlines()[0]
        raise ConfigError(f"{origin}: invalid value for {full_key!r}: {message}") from None


def _read_yaml(path: Path) -> DictConfig:
    try:
        data = OmegaConf.load(path)
    except FileNotFoundError:
        raise
    except Exception as err:  # yaml scanner/parser errors
        raise ConfigError(f"{path}: cannot parse YAML: {err}") from None
    if data is None:
        return OmegaConf.create({})
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path}: the top level of a config file must be a mapping, got a {type(data).__name__}")
    return data


def _base_paths(raw: DictConfig, path: Path) -> list[str]:
    """The ``_base_`` entry of a file (removed from ``raw``) as a list of paths."""
    bases = raw.pop(BASE_KEY, None) if BASE_KEY in raw else None
    if bases is None:
        return []
    if isinstance(bases, str):
        return [bases]
    if isinstance(bases, ListConfig) and all(isinstance(b, str) for b in bases):
        return list(bases)
    raise ConfigError(f"{path}: {BASE_KEY} must be a path or a list of paths, got {bases!r}")


def _load_file(
    path: Path,
    stack: tuple[Path, ...],
    included_by: Optional[Path],
    schema: Optional[type],
    choices_to_check: Optional[list[tuple[DictConfig, str]]] = None,
) -> DictConfig:
    """Load ``path`` merged over its ``_base_`` chain as a plain mapping, each file's keys and types checked
    against ``schema`` (unchecked when None; each file's choices are added to ``choices_to_check``, checked
    once every key is known to exist); ``stack`` detects cycles."""
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"_base_ include cycle: {chain}")
    if not path.is_file():
        where = f" (listed in _base_ of {included_by})" if included_by else ""
        raise FileNotFoundError(f"config file not found: {path}{where}")
    raw = _read_yaml(path)
    base_paths = _base_paths(raw, path)
    if schema is not None:
        _rename_deprecated_keys(_expand_shorthands(raw, schema), str(path), schema)
        _merge_checked(OmegaConf.structured(schema), raw, str(path))  # each file valid on its own: errors name it
        if choices_to_check is not None:
            choices_to_check.append((raw, str(path)))
    merged = OmegaConf.create({})
    for base in base_paths:
        merged = OmegaConf.merge(merged, _load_file(path.parent / base, (*stack, path), path, schema, choices_to_check))
    return OmegaConf.merge(merged, raw)


def _override_node(item: str) -> DictConfig:
    """One ``key=value`` override as a mapping (value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"command-line override {item!r} is not of the form key=value (e.g. optim.lr=0.02)")
    key, _ = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"command-line override {item!r} has an empty key")
    try:
        return OmegaConf.from_dotlist([item])
    except OmegaConfBaseException as err:
        raise ConfigError(f"command-line override {item!r}: {str(err).splitlines()[0]}") from None


def read_raw_config(path: Optional[str | os.PathLike], overrides: Optional[list[str]] = None) -> DictConfig:
    """The config of ``path`` (its ``_base_`` chain merged) and ``overrides``, unchecked: what a schema
    function reads to choose the schema."""
    raw = _load_file(Path(path), (), None, None) if path is not None else OmegaConf.create({})
    for item in overrides or []:
        raw = OmegaConf.merge(raw, _override_node(item))
    return raw


def _resolve_schema(schema: Schema, raw: DictConfig) -> type:
    return schema if dataclasses.is_dataclass(schema) else schema(raw)


def apply_overrides(
    cfg: DictConfig,
    overrides: Optional[list[str]],
    schema: type,
    choices_to_check: Optional[list[tuple[DictConfig, str]]] = None,
) -> DictConfig:
    """Apply ``key=value`` dot-list overrides (values parsed as YAML) to a structured config of ``schema``;
    their choices are checked at once, or added to ``choices_to_check``.

    Raises:
        ConfigError: an item without ``=``, an unknown key, a value of the wrong type or not among its choices.
    """
    pending: list[tuple[DictConfig, str]] = [] if choices_to_check is None else choices_to_check
    for item in overrides or []:
        origin = f"command-line override {item!r}"
        update = _expand_shorthands(_override_node(item), schema)
        cfg = _merge_checked(cfg, _rename_deprecated_keys(update, origin, schema), origin)
        pending.append((update, origin))
    if choices_to_check is None:
        for node, origin in pending:
            _check_choices(node, origin, schema)
    return cfg


def _validate_tree(value: Any, prefix: str) -> None:
    """Call ``validate()`` on every option dataclass of ``value``, innermost first."""
    if not dataclasses.is_dataclass(value):
        return
    for item in dataclasses.fields(value):
        _validate_tree(getattr(value, item.name), f"{prefix}{item.name}.")
    check = getattr(value, "validate", None)
    if check is None:
        return
    try:
        check()
    except OptionError as err:
        raise ConfigError(err.at(prefix)) from None


def validate_options(cfg: DictConfig, schema: type) -> DictConfig:
    """Check what the type system cannot: each option dataclass's ranges and the combinations its
    ``validate()`` checks (sections first, the whole config last); returns ``cfg``. (The choices of each file
    and override are checked as they are read; the schema's defaults are valid by construction.)

    Raises:
        ConfigError: naming the key, the bad value and the accepted values.
    """
    _validate_tree(OmegaConf.to_object(cfg), "")
    return cfg


def load_config(
    path: Optional[str | os.PathLike] = None, overrides: Optional[list[str]] = None, *, schema: Schema
) -> DictConfig:
    """Load a config: ``schema`` defaults <- ``_base_`` chain <- file <- ``overrides``, validated.

    Args:
        path: a YAML file, or None for the schema defaults alone.
        overrides: ``key=value`` strings, e.g. ``["optim.lr=0.02", "trainer.devices=2"]``.
        schema: the schema dataclass, or a function choosing it from the raw config.

    Returns:
        A structured ``DictConfig`` (unknown keys stay errors on later edits).

    Raises:
        ConfigError: unknown key / wrong type (naming the key and the file or override), include cycle,
            or an invalid value.
        FileNotFoundError: the file or one of its bases does not exist.
    """
    chosen = schema if dataclasses.is_dataclass(schema) else schema(read_raw_config(path, overrides))
    cfg = OmegaConf.structured(chosen)
    choices: list[tuple[DictConfig, str]] = []  # checked once every key of every file and override exists
    if path is not None:
        cfg = _merge_checked(cfg, _load_file(Path(path), (), None, chosen, choices), str(path))
    cfg = apply_overrides(cfg, overrides, chosen, choices)
    for node, origin in choices:
        _check_choices(node, origin, chosen)
    return validate_options(cfg, chosen)


def config_to_dict(cfg: DictConfig) -> dict:
    """The config as a plain, interpolation-resolved ``dict`` (what checkpoints store)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def config_from_dict(data: dict, overrides: Optional[list[str]] = None, *, schema: Schema) -> DictConfig:
    """Rebuild a structured config from :func:`config_to_dict` output (e.g. a checkpoint's), then apply overrides."""
    stored = OmegaConf.create(data)
    chosen = _resolve_schema(schema, stored)
    stored = _rename_deprecated_keys(_expand_shorthands(stored, chosen), "stored config", chosen)
    stored = _fill_added_keys(stored, chosen)
    cfg = _merge_checked(OmegaConf.structured(chosen), stored, "stored config")
    _check_choices(stored, "stored config", chosen)
    cfg = apply_overrides(cfg, overrides, chosen)
    return validate_options(cfg, chosen)


def config_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.create(config_to_dict(cfg)))


def save_config(cfg: DictConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML to ``path`` (parent directories created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(config_yaml(cfg))
    return out
