"""Experiment configuration: the schema, ``_base_`` inheritance between YAML files, command-line overrides.

The schema is a tree of dataclasses used as an OmegaConf structured config, so a misspelt or unknown key is
an error that names the key and the file (or command-line override) it came from, and a value of the
wrong type is rejected the same way.

A YAML file may start with ``_base_: path`` or ``_base_: [path, ...]`` (paths relative to that file).
Bases are loaded recursively and merged in order, then the file itself is merged on top; mappings merge
key by key (also the free-form ``detector_kwargs`` dict), lists and scalars are replaced. Command-line
overrides (``optim.lr=0.02``, ``trainer.devices=2``, ``data.min_sizes=[96,128]``) are applied last.

The sections are the option dataclasses of the packages that use them, composed here: ``model`` is
:class:`~sasa_det.detectors.DetectorOptions` with a :class:`~sasa_det.backbones.ResNetOptions` backbone and
:class:`~sasa_det.layers.SasaOptions`; ``data`` is :class:`~sasa_det.data.CocoDataOptions` (with its
:class:`~sasa_det.data.DatasetChecks`); ``optim`` is :class:`~sasa_det.optim.OptimSettings`; ``eval`` is
:class:`~sasa_det.evaluation.EvalOptions`. Builders turn a section into objects with ``OmegaConf.to_object``.

Every value is validated once, here, when it is read: the type by the schema; a value with a fixed set of
choices (architectures, backbone presets, stage operations, the SASA implementation, optimizers, ...), which
the owning dataclass declares with :func:`sasa_det.choices.choice`, as each file or override is read, so a
misspelt choice fails before any data is touched, naming the key, the file, the valid choices and the
closest one; ranges and combinations once the config is assembled. ``model.backbone: NAME`` (a string) is
shorthand for ``model.backbone.name: NAME``. A key that was renamed (an option dataclass's
``renamed_keys``) is still read, with a ``FutureWarning`` naming its new key.

Only builders read this config; every ``nn.Module`` takes plain arguments.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from sasa_det.backbones.presets import ResNetOptions
from sasa_det.choices import choice, field_choices
from sasa_det.data import CocoDataOptions
from sasa_det.detectors.build import DetectorOptions
from sasa_det.evaluation.coco_evaluator import EvalOptions
from sasa_det.experiment_loggers import LoggingOptions
from sasa_det.layers import SasaOptions
from sasa_det.optim import OptimSettings

__all__ = [
    "ClassifierConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "ShapesConfig",
    "TrainerConfig",
    "check_data_paths",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
    "validate_config",
]

BASE_KEY = "_base_"
#: The engine's tasks (``sasa_det.engine.tasks`` implements one for each).
TASKS = ("detection", "classification")


@dataclass
class ModelConfig(DetectorOptions):
    """Detector: the detection options (:class:`~sasa_det.detectors.DetectorOptions`: ``arch``, ``fpn``, ``head``,
    ...), its backbone and the SASA layers' options."""

    #: foreground classes; null = taken from the training dataset
    num_classes: Optional[int] = None
    #: backbone preset and options
    backbone: ResNetOptions = field(default_factory=ResNetOptions)
    #: every SASA layer: backbone, attention FPN, attention heads
    sasa: SasaOptions = field(default_factory=SasaOptions)
    #: weights to start from (no optimizer state): our checkpoint, a state dict, torchvision weights; mismatched
    #: shapes are re-initialised
    init_from: Optional[str] = None


@dataclass
class ClassifierConfig:
    """Image classifier for ``task: classification`` (backbone pre-training / fine-tuning)."""

    #: backbone preset and options
    backbone: ResNetOptions = field(default_factory=ResNetOptions)
    #: every SASA layer of the backbone
    sasa: SasaOptions = field(default_factory=SasaOptions)
    #: null = number of class folders in data.train_dir
    num_classes: Optional[int] = None
    #: weights to start from (no optimizer state); a new class count re-initialises the head
    init_from: Optional[str] = None
    #: training crop / evaluation size in pixels
    image_size: int = 224
    #: cross-entropy label smoothing (0 = off)
    label_smoothing: float = 0.0
    #: dropout before the linear head
    dropout: float = 0.0


@dataclass
class ShapesConfig:
    """Synthetic shapes dataset generated on first use (``sasa_det.data.shapes.make_shapes_dataset``)."""

    #: directory to generate into / reuse; null = do not use shapes
    root: Optional[str] = None
    #: training images
    num_train: int = 200
    #: validation images
    num_val: int = 50
    #: image side in pixels
    image_size: int = 128
    #: generator seed (the dataset is deterministic by seed)
    seed: int = 0
    #: fewest shapes per image
    min_objects: int = 1
    #: most shapes per image
    max_objects: int = 4
    #: shapes drawn: circle, square, triangle, star, diamond
    classes: list[str] = field(default_factory=lambda: ["circle", "square", "triangle"])


@dataclass
class DataConfig(CocoDataOptions):
    """Datasets and loading. Detection uses COCO-format data (:class:`~sasa_det.data.CocoDataOptions`: the four
    paths, loaders, augmentation, checks); classification an image-folder tree."""

    #: when shapes.root is set it supplies the four COCO paths
    shapes: ShapesConfig = field(default_factory=ShapesConfig)
    #: classification: ImageFolder training root
    train_dir: Optional[str] = None
    #: classification: ImageFolder validation root
    val_dir: Optional[str] = None


@dataclass
class TrainerConfig:
    """``pytorch_lightning.Trainer`` settings."""

    #: training epochs
    max_epochs: int = 12
    #: stop after this many optimizer steps (-1 = use max_epochs); also the schedule length when > 0
    max_steps: int = -1
    #: number of devices, list of ids, or "auto"
    devices: Any = "auto"
    #: machines
    num_nodes: int = 1
    #: "auto" | "cpu" | "gpu" | ...
    accelerator: str = "auto"
    #: "auto" | "ddp" | "ddp_spawn" | ...
    strategy: str = "auto"
    #: "32-true" | "16-mixed" | "bf16-mixed" (AMP)
    precision: str = "32-true"
    #: convert BatchNorm to SyncBatchNorm under DDP
    sync_batchnorm: bool = False
    #: logging interval in optimizer steps
    log_every_n_steps: int = 20
    #: validation interval in epochs
    check_val_every_n_epoch: int = 1
    #: int (batches) or float (fraction) per epoch; null = all
    limit_train_batches: Any = None
    #: int (batches) or float (fraction) per validation; null = all
    limit_val_batches: Any = None
    #: torch deterministic algorithms
    deterministic: bool = False
    #: seed for python/numpy/torch and the data loaders
    seed: int = 0
    #: gradient accumulation
    accumulate_grad_batches: int = 1
    #: show a progress bar
    enable_progress_bar: bool = True
    #: write checkpoints/last.ckpt every N optimizer steps (and at every epoch end); 0 = epoch ends only
    checkpoint_every_n_steps: int = 500
    #: resume although the training set changed since the checkpoint (refused otherwise): the interrupted
    #: epoch ends at the checkpoint and the next one starts with the new set's order
    resume_with_changed_data: bool = False
    #: exponential moving average of the weights (e.g. 0.999): validated and saved in checkpoints; null = off
    ema_decay: Optional[float] = None
    #: optimizer steps before the moving average starts
    ema_start_step: int = 0


@dataclass
class ExperimentConfig:
    """One experiment: what to train, on what data, how, and where to write results."""

    #: "detection" | "classification"
    task: str = choice(TASKS, default="detection")
    #: checkpoints, logs, resolved config, evaluation results
    output_dir: str = "outputs/run"
    #: detection model
    model: ModelConfig = field(default_factory=ModelConfig)
    #: classification model
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    #: datasets and loaders
    data: DataConfig = field(default_factory=DataConfig)
    #: optimizer and schedule
    optim: OptimSettings = field(default_factory=OptimSettings)
    #: Lightning trainer
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    #: experiment trackers
    logging: LoggingOptions = field(default_factory=LoggingOptions)
    #: evaluation
    eval: EvalOptions = field(default_factory=EvalOptions)


class ConfigError(ValueError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value, include cycle)."""


def _schema() -> DictConfig:
    return OmegaConf.structured(ExperimentConfig)


def _option_fields(schema: type = ExperimentConfig, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """``(full key, field, its type)`` for every key of the schema, the keys of nested option dataclasses too."""
    hints = typing.get_type_hints(schema)
    for item in dataclasses.fields(schema):
        key = f"{prefix}{item.name}"
        yield key, item, hints[item.name]
        if dataclasses.is_dataclass(hints[item.name]):
            yield from _option_fields(hints[item.name], f"{key}.")


def _choice_table() -> dict[str, dataclasses.Field]:
    """Keys whose option declares its values (:func:`sasa_det.choices.choice`) -> the option's field."""
    return {key: item for key, item, _ in _option_fields() if field_choices(item) is not None}


def _renamed_keys() -> dict[str, str]:
    """Former keys -> their keys now, from the ``renamed_keys`` that option dataclasses declare."""
    return {
        f"{key}.{old}": f"{key}.{new}"
        for key, _, kind in _option_fields()
        for old, new in getattr(kind, "renamed_keys", {}).items()
    }


def _rename_deprecated_keys(node: DictConfig, origin: str) -> DictConfig:
    """Move the values of former keys in ``node`` (one file or override) to their keys now, with a
    ``FutureWarning`` naming both (in place; returns ``node``). A former key set to null is dropped."""
    for old, new in _renamed_keys().items():
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


def _check_choices(node: DictConfig, origin: str) -> None:
    """Raise ConfigError for any key of ``node`` whose value (or list entry) is not one of its choices."""
    for key, item in _choice_table().items():
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


def _expand_shorthands(node: DictConfig) -> DictConfig:
    """``model.backbone: NAME`` / ``classifier.backbone: NAME`` -> ``{name: NAME}`` (in place; returns ``node``)."""
    for section in ("model", "classifier"):
        part = node.get(section) if isinstance(node, DictConfig) else None
        if isinstance(part, DictConfig) and isinstance(part.get("backbone"), str):
            part.backbone = {"name": part.backbone}
    return node


def _known_keys(schema: DictConfig, full_key: str) -> list[str]:
    """Keys that exist next to ``full_key`` in the schema (for a 'did you mean' hint)."""
    parent_path = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node = OmegaConf.select(schema, parent_path) if parent_path else schema
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _merge_checked(base: DictConfig, update: DictConfig, origin: str) -> DictConfig:
    """Merge ``update`` onto ``base`` (a structured config), raising ConfigError naming ``origin``."""
    try:
        return OmegaConf.merge(base, update)
    except ConfigKeyError as err:
        full_key = str(getattr(err, "full_key", "") or getattr(err, "key", ""))
        leaf = full_key.rsplit(".", 1)[-1]
        hint = difflib.get_close_matches(leaf, _known_keys(base, full_key), n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
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


def _load_file(path: Path, stack: tuple[Path, ...], included_by: Optional[Path]) -> DictConfig:
    """Load ``path`` merged over its ``_base_`` chain as a plain (schema-checked) mapping; ``stack`` detects cycles."""
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"_base_ include cycle: {chain}")
    if not path.is_file():
        where = f" (listed in _base_ of {included_by})" if included_by else ""
        raise FileNotFoundError(f"config file not found: {path}{where}")
    raw = _read_yaml(path)
    bases = raw.pop(BASE_KEY, None) if BASE_KEY in raw else None
    if bases is None:
        base_paths: list[str] = []
    elif isinstance(bases, str):
        base_paths = [bases]
    elif isinstance(bases, ListConfig) and all(isinstance(b, str) for b in bases):
        base_paths = list(bases)
    else:
        raise ConfigError(f"{path}: {BASE_KEY} must be a path or a list of paths, got {bases!r}")
    _rename_deprecated_keys(_expand_shorthands(raw), str(path))
    _merge_checked(_schema(), raw, str(path))  # each file must be valid on its own: errors name this file
    _check_choices(raw, str(path))
    merged = OmegaConf.create({})
    for base in base_paths:
        merged = OmegaConf.merge(merged, _load_file(path.parent / base, (*stack, path), path))
    return OmegaConf.merge(merged, raw)


def apply_overrides(cfg: DictConfig, overrides: Optional[list[str]]) -> DictConfig:
    """Apply ``key=value`` dot-list overrides (values parsed as YAML) to a structured config.

    Raises:
        ConfigError: an item without ``=``, an unknown key or a value of the wrong type.
    """
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"command-line override {item!r} is not of the form key=value (e.g. optim.lr=0.02)")
        key, _ = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"command-line override {item!r} has an empty key")
        try:
            update = _expand_shorthands(OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise ConfigError(f"command-line override {item!r}: {str(err).splitlines()[0]}") from None
        origin = f"command-line override {item!r}"
        cfg = _merge_checked(cfg, _rename_deprecated_keys(update, origin), origin)
        _check_choices(update, origin)
    return cfg


def validate_config(cfg: DictConfig) -> DictConfig:
    """Check the values of an assembled config that the type system cannot (choices, ranges); returns ``cfg``.

    (:func:`load_config` and :func:`config_from_dict` check the choices of each file and override as they
    read it, so that a message names where the value came from, and the ranges here once, at the end.)

    Raises:
        ConfigError: naming the key, the bad value and the accepted values.
    """
    _check_choices(cfg, "config")
    return _check_ranges(cfg)


def _check_ranges(cfg: DictConfig) -> DictConfig:
    """Raise ConfigError for a value outside its range, or values that do not go together; returns ``cfg``."""
    for frac in cfg.optim.milestones:
        if not 0.0 < float(frac) < 1.0:
            raise ConfigError(
                f"optim.milestones={list(cfg.optim.milestones)}: milestones are fractions of the total "
                "training steps and must lie in (0, 1), e.g. [0.667, 0.889]"
            )
    if cfg.optim.warmup_epochs < 0:
        raise ConfigError(f"optim.warmup_epochs must be >= 0, got {cfg.optim.warmup_epochs}")
    if not cfg.data.min_sizes:
        raise ConfigError("data.min_sizes must list at least one training size, e.g. [800]")
    if not 0.0 <= cfg.data.flip_prob <= 1.0:
        raise ConfigError(f"data.flip_prob must be in [0, 1], got {cfg.data.flip_prob}")
    for section in ("model", "classifier"):
        frozen = cfg[section].backbone.frozen_stages
        if frozen is not None and not 0 <= frozen <= 4:
            raise ConfigError(f"{section}.backbone.frozen_stages must be in 0..4 (0 = nothing frozen), got {frozen}")
        stage_ops = cfg[section].backbone.stage_ops
        if stage_ops is not None and len(stage_ops) != 4:
            raise ConfigError(f"{section}.backbone.stage_ops needs one operation per stage (4), got {list(stage_ops)}")
    if not cfg.optim.backbone_lr_mult > 0:
        raise ConfigError(
            f"optim.backbone_lr_mult must be > 0 (freeze with model.backbone.frozen_stages), got {cfg.optim.backbone_lr_mult}"
        )
    if cfg.optim.reference_batch_size is not None and cfg.optim.reference_batch_size < 1:
        raise ConfigError(f"optim.reference_batch_size must be >= 1 or null, got {cfg.optim.reference_batch_size}")
    if cfg.trainer.checkpoint_every_n_steps < 0:
        raise ConfigError(f"trainer.checkpoint_every_n_steps must be >= 0, got {cfg.trainer.checkpoint_every_n_steps}")
    for key in ("error_iou_threshold", "error_score_threshold"):
        if not 0.0 <= cfg.eval[key] <= 1.0:
            raise ConfigError(f"eval.{key} must be in [0, 1], got {cfg.eval[key]}")
    if "csv" not in cfg.logging.loggers:
        raise ConfigError(
            f"logging.loggers={list(cfg.logging.loggers)} must include csv: tools/analyze.py and resuming read "
            "logs/version_0/metrics.csv; add the others beside it, e.g. [csv, wandb]"
        )
    tta = cfg.eval.tta
    if not tta.flips or not tta.scales or any(not float(s) > 0 for s in tta.scales):
        raise ConfigError(
            f"eval.tta needs at least one flip and positive scales, got flips={list(tta.flips)}, scales={list(tta.scales)}"
            " (plain inference: flips=[none], scales=[1.0])"
        )
    if not 0.0 < tta.iou_threshold <= 1.0:
        raise ConfigError(f"eval.tta.iou_threshold must be in (0, 1], got {tta.iou_threshold}")
    if cfg.model.arch == "mask_rcnn" and (list(tta.flips) != ["none"] or [float(s) for s in tta.scales] != [1.0]):
        raise ConfigError(
            "eval.tta merges boxes only; Mask R-CNN's masks are not merged: leave eval.tta at its default"
        )
    if cfg.data.batch_size < 1 or cfg.data.val_batch_size < 1:
        raise ConfigError("data.batch_size and data.val_batch_size must be >= 1")
    _check_deterministic(cfg)
    return cfg


def _check_deterministic(cfg: DictConfig) -> None:
    """``trainer.deterministic=true`` with an op that has no deterministic CUDA backward fails here, not mid-step.

    The attention layers have deterministic paths (pooled AA's upsampling by matrices, the Triton SASA
    kernels without atomics); torchvision's RoIAlign, which Faster/Mask R-CNN use, has none.
    """
    if not cfg.trainer.deterministic or cfg.task != "detection" or cfg.model.arch == "retinanet":
        return
    accelerator = str(cfg.trainer.accelerator)
    if accelerator == "cpu":
        return
    if accelerator == "auto":
        import torch

        if not torch.cuda.is_available():
            return
    raise ConfigError(
        f"trainer.deterministic=true: model.arch={cfg.model.arch!r} uses torchvision's RoIAlign, whose CUDA backward "
        "has no deterministic implementation (torch would stop at the first step). Set trainer.deterministic=false, "
        "train on trainer.accelerator=cpu, or use model.arch=retinanet."
    )


#: Data paths a config may set: (key, what it must be, the split it belongs to, what it should hold).
_DATA_PATHS = (
    ("train_ann", "file", "train", "the training split's COCO annotation JSON"),
    ("train_images", "folder", "train", "the folder the training JSON's file_name entries are relative to"),
    ("val_ann", "file", "val", "the validation split's COCO annotation JSON"),
    ("val_images", "folder", "val", "the folder the validation JSON's file_name entries are relative to"),
    ("train_dir", "folder", "train", "the training ImageFolder root (one sub-folder per class)"),
    ("val_dir", "folder", "val", "the validation ImageFolder root (one sub-folder per class)"),
)


def check_data_paths(cfg: DictConfig, splits: tuple[str, ...] = ("train", "val")) -> None:
    """Every data path the config sets for ``splits`` exists and is a file or folder as it must be.

    Run before anything is written (the runner's ``train``/``evaluate`` start with it). Paths filled later
    from ``data.shapes.root`` are not set yet and not checked.

    Raises:
        ConfigError: one line per bad key, naming the key, the value (and the folder a relative value was
            taken from) and what it should point at.
    """
    problems = []
    for key, kind, split, meaning in _DATA_PATHS:
        value = cfg.data.get(key)
        if value is None or split not in splits:
            continue
        path = Path(str(value)).expanduser()
        where = "" if path.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        if not path.exists():
            problems.append(f"data.{key}={str(value)!r}: no such {kind}{where}; set it to {meaning}")
        elif kind == "file" and not path.is_file():
            problems.append(f"data.{key}={str(value)!r} is a folder; set it to {meaning}")
        elif kind == "folder" and not path.is_dir():
            problems.append(f"data.{key}={str(value)!r} is a file; set it to {meaning}")
    if problems:
        raise ConfigError("data paths of the config are wrong (nothing was written):\n  " + "\n  ".join(problems))


def load_config(path: Optional[str | os.PathLike] = None, overrides: Optional[list[str]] = None) -> DictConfig:
    """Load an experiment config: schema defaults <- ``_base_`` chain <- file <- ``overrides``.

    Args:
        path: a YAML file, or None for the schema defaults alone.
        overrides: ``key=value`` strings, e.g. ``["optim.lr=0.02", "trainer.devices=2"]``.

    Returns:
        A structured ``DictConfig`` of :class:`ExperimentConfig` (unknown keys stay errors on later edits).

    Raises:
        ConfigError: unknown key / wrong type (naming the key and the file or override), include cycle,
            or an invalid value.
        FileNotFoundError: the file or one of its bases does not exist.
    """
    cfg = _schema()
    if path is not None:
        cfg = _merge_checked(cfg, _load_file(Path(path), (), None), str(path))
    cfg = apply_overrides(cfg, overrides)
    return _check_ranges(cfg)


def config_to_dict(cfg: DictConfig) -> dict:
    """The config as a plain, interpolation-resolved ``dict`` (what checkpoints store)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def config_from_dict(data: dict, overrides: Optional[list[str]] = None) -> DictConfig:
    """Rebuild a structured config from :func:`config_to_dict` output (e.g. a checkpoint's), then apply overrides."""
    stored = _rename_deprecated_keys(_expand_shorthands(OmegaConf.create(data)), "stored config")
    cfg = _merge_checked(_schema(), stored, "stored config")
    _check_choices(stored, "stored config")
    cfg = apply_overrides(cfg, overrides)
    return _check_ranges(cfg)


def save_config(cfg: DictConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML to ``path`` (parent directories created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(config_to_dict(cfg)), out)
    return out
