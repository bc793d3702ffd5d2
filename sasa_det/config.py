"""Experiment configuration: the schema, ``_base_`` inheritance between YAML files, command-line overrides.

The schema is a tree of dataclasses used as an OmegaConf structured config, so a misspelt or unknown key is
an error that names the key and the file (or command-line override) it came from, and a value of the
wrong type is rejected the same way.

A YAML file may start with ``_base_: path`` or ``_base_: [path, ...]`` (paths relative to that file).
Bases are loaded recursively and merged in order, then the file itself is merged on top; mappings merge
key by key (also the free-form ``detector_kwargs`` dict), lists and scalars are replaced. Command-line
overrides (``optim.lr=0.02``, ``trainer.devices=2``, ``data.min_sizes=[96,128]``) are applied last.

Values with a fixed set of choices (architectures, backbone presets, stage operations, the SASA
implementation, optimizers, ...) are checked as each file or override is read, so a misspelt choice fails
before any data is touched, naming the key, the file and the valid choices. ``model.backbone: NAME`` (a
string) is shorthand for ``model.backbone.name: NAME``.

Only builders read this config; every ``nn.Module`` takes plain arguments.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

__all__ = [
    "BackboneConfig",
    "ClassifierConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimConfig",
    "SasaConfig",
    "ShapesConfig",
    "TrainerConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
    "validate_config",
]

BASE_KEY = "_base_"
TASKS = ("detection", "classification")


@dataclass
class SasaConfig:
    """Options of every SASA layer of the model: backbone stages, attention FPN and attention heads alike."""

    impl: str = (
        "auto"  # implementation: "auto" (fastest for the device) | "shift" | "halo" | "unfold" | registered ones
    )
    kernel_size: int = 7  # window k (SASA Sec. 4.1: 7)
    heads: int = 8  # attention heads (SASA Sec. 4.1: 8)
    scaled: bool = False  # divide logits by sqrt(head width); the paper's Eq. 3 has no scaling
    mask_padding: bool = False  # exclude out-of-image keys from the softmax instead of zero keys/values


@dataclass
class BackboneConfig:
    """Backbone preset and its options (``sasa_det.backbones.build_backbone``); null = the preset's value."""

    name: str = "resnet50"  # a preset of sasa_det.backbones.list_backbones()
    weights: Optional[str] = (
        None  # backbone weights to start from: a classification checkpoint, classifier or backbone state_dict, torchvision ResNet weights
    )
    stage_ops: Optional[list[str]] = None  # spatial op per stage, 4 of "conv" | "sasa" | "aa"
    stem: Optional[str] = None  # "conv" | "attention" (SASA spatially-aware stem)
    blocks_per_stage: Optional[list[int]] = None  # residual blocks of stages 1-4
    base_width: Optional[int] = None  # stage-1 bottleneck width (64 in the papers)
    norm: Optional[str] = None  # "bn" | "frozen_bn" (fixed statistics, for fine-tuning with small batches)
    frozen_stages: Optional[int] = None  # 0 = train all; n = freeze the stem and stages 1..n
    zero_init_residual: Optional[bool] = None  # start each residual branch as the identity
    image_size: Optional[int] = None  # largest input side (sizes AA relative tables); null = derived from the data
    stem_heads: Optional[int] = None  # attention-stem heads (SASA: 4)
    stem_mixtures: Optional[int] = None  # attention-stem value mixtures m (SASA: unstated, 4)
    aa_dk_ratio: Optional[float] = None  # AA kappa = d_k / F_out (AA: 0.2)
    aa_dv_ratio: Optional[float] = None  # AA upsilon = d_v / F_out (AA: 0.1)
    aa_heads: Optional[int] = None  # AA heads (AA: 8)
    aa_pool_attention_stages: Optional[list[int]] = None  # stages whose AA attention runs 3x3/2-pooled (detection)


@dataclass
class ModelConfig:
    """Detector: what ``sasa_det.detectors.build_detector`` builds."""

    arch: str = "retinanet"  # "retinanet" | "faster_rcnn" | "mask_rcnn"
    num_classes: Optional[int] = None  # foreground classes; null = taken from the training dataset
    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # backbone preset and options
    sasa: SasaConfig = field(default_factory=SasaConfig)  # every SASA layer: backbone, attention FPN, attention heads
    init_from: Optional[str] = (
        None  # weights to start from (no optimizer state): our checkpoint, a state dict, torchvision weights; mismatched shapes are re-initialised
    )
    fpn: str = "conv"  # "conv" (torchvision FPN) | "attention" (SASA paper's attention FPN)
    head: str = "conv"  # "conv" (torchvision heads) | "attention" (SASA paper's attention heads; RetinaNet)
    fpn_channels: int = 256  # FPN width (SASA paper: d=256)
    head_norm: Optional[str] = (
        None  # RetinaNet heads: "none" | "group" (GroupNorm); null = conv head none, attention head group
    )
    min_size: int = 800  # evaluation resize: shorter side (torchvision GeneralizedRCNNTransform)
    max_size: int = 1333  # evaluation resize: longest side cap
    detector_kwargs: dict[str, Any] = field(
        default_factory=dict
    )  # passed to the torchvision detector (e.g. detections_per_img)


@dataclass
class ClassifierConfig:
    """Image classifier for ``task: classification`` (backbone pre-training / fine-tuning)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # backbone preset and options
    sasa: SasaConfig = field(default_factory=SasaConfig)  # every SASA layer of the backbone
    num_classes: Optional[int] = None  # null = number of class folders in data.train_dir
    init_from: Optional[str] = (
        None  # weights to start from (no optimizer state); a new class count re-initialises the head
    )
    image_size: int = 224  # training crop / evaluation size in pixels
    label_smoothing: float = 0.0  # cross-entropy label smoothing (0 = off)
    dropout: float = 0.0  # dropout before the linear head


@dataclass
class ShapesConfig:
    """Synthetic shapes dataset generated on first use (``sasa_det.data.shapes.make_shapes_dataset``)."""

    root: Optional[str] = None  # directory to generate into / reuse; null = do not use shapes
    num_train: int = 200  # training images
    num_val: int = 50  # validation images
    image_size: int = 128  # image side in pixels
    seed: int = 0  # generator seed (the dataset is deterministic by seed)
    min_objects: int = 1  # fewest shapes per image
    max_objects: int = 4  # most shapes per image
    classes: list[str] = field(
        default_factory=lambda: ["circle", "square", "triangle"]
    )  # shapes drawn: circle, square, triangle, star, diamond


@dataclass
class DataConfig:
    """Datasets and loading. Detection uses COCO-format data; classification an image-folder tree."""

    train_images: Optional[str] = None  # training image directory (COCO format)
    train_ann: Optional[str] = None  # training instances json
    val_images: Optional[str] = None  # validation image directory
    val_ann: Optional[str] = None  # validation instances json
    shapes: ShapesConfig = field(
        default_factory=ShapesConfig
    )  # when shapes.root is set it supplies the four paths above
    batch_size: int = 2  # training images per device (global batch = batch_size * devices * num_nodes)
    val_batch_size: int = 2  # validation images per device
    num_workers: int = 2  # data-loader workers per device
    min_sizes: list[int] = field(
        default_factory=lambda: [800]
    )  # training shorter side, sampled per image (multiscale jitter)
    max_size: int = 1333  # training longest-side cap
    flip_prob: float = 0.5  # horizontal-flip probability in training
    with_masks: Optional[bool] = None  # load instance masks; null = only for arch mask_rcnn
    keep_empty_train: bool = False  # keep training images without annotations
    check_images: str = "header"  # before training open every image: "header" (size/mode/EXIF, fast) | "full" (decode all pixels) | "off"
    on_bad_records: str = "error"  # "error": list every bad record and stop | "drop": remove them (listed in data_report_*), skip training images that fail later
    check_cache: bool = (
        True  # cache the image check by file size + modification time (a second run does not reopen the images)
    )
    check_cache_dir: Optional[str] = None  # image-check cache folder; null = $SASA_DET_CACHE_DIR or ~/.cache/sasa_det
    check_workers: Optional[int] = None  # threads for the image check; null = min(8, CPUs)
    train_dir: Optional[str] = None  # classification: ImageFolder training root
    val_dir: Optional[str] = None  # classification: ImageFolder validation root


@dataclass
class OptimConfig:
    """Optimizer and per-step learning-rate schedule (``sasa_det.engine.optim``)."""

    name: str = "sgd"  # "sgd" | "adamw"
    lr: float = 0.01  # peak learning rate (for reference_batch_size images per step when that is set)
    reference_batch_size: Optional[int] = (
        None  # linear scaling rule: lr *= global batch / this (global = devices x nodes x batch x accumulation); null = lr as given
    )
    backbone_lr_mult: float = 1.0  # learning-rate multiplier of the backbone's parameters (e.g. 0.1 when fine-tuning)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # SGD Nesterov momentum
    weight_decay: float = 1e-4  # not applied to norms, biases and position embeddings
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    schedule: str = "cosine"  # "cosine" (to 0 at the end) | "multistep" | "constant", after the warm-up
    warmup_epochs: float = 0.0  # linear warm-up length in epochs (may be fractional)
    warmup_steps: Optional[int] = None  # linear warm-up length in optimizer steps; overrides warmup_epochs when set
    warmup_factor: float = 0.001  # learning-rate multiplier at the first warm-up step
    milestones: list[float] = field(
        default_factory=list
    )  # multistep: FRACTIONS of the total steps in (0, 1), e.g. [0.667, 0.889]
    gamma: float = 0.1  # multistep decay factor
    grad_clip: Optional[float] = None  # clip the global gradient norm to this value; null = no clipping


@dataclass
class TrainerConfig:
    """``pytorch_lightning.Trainer`` settings."""

    max_epochs: int = 12  # training epochs
    max_steps: int = -1  # stop after this many optimizer steps (-1 = use max_epochs); also the schedule length when > 0
    devices: Any = "auto"  # number of devices, list of ids, or "auto"
    num_nodes: int = 1  # machines
    accelerator: str = "auto"  # "auto" | "cpu" | "gpu" | ...
    strategy: str = "auto"  # "auto" | "ddp" | "ddp_spawn" | ...
    precision: str = "32-true"  # "32-true" | "16-mixed" | "bf16-mixed" (AMP)
    sync_batchnorm: bool = False  # convert BatchNorm to SyncBatchNorm under DDP
    log_every_n_steps: int = 20  # logging interval in optimizer steps
    check_val_every_n_epoch: int = 1  # validation interval in epochs
    limit_train_batches: Any = None  # int (batches) or float (fraction) per epoch; null = all
    limit_val_batches: Any = None  # int (batches) or float (fraction) per validation; null = all
    deterministic: bool = False  # torch deterministic algorithms
    seed: int = 0  # seed for python/numpy/torch and the data loaders
    accumulate_grad_batches: int = 1  # gradient accumulation
    enable_progress_bar: bool = True  # show a progress bar
    checkpoint_every_n_steps: int = (
        500  # write checkpoints/last.ckpt every N optimizer steps (and at every epoch end); 0 = epoch ends only
    )
    ema_decay: Optional[float] = (
        None  # exponential moving average of the weights (e.g. 0.999): validated and saved in checkpoints; null = off
    )
    ema_start_step: int = 0  # optimizer steps before the moving average starts


@dataclass
class EvalConfig:
    """Evaluation settings (validation during training, ``tools/eval.py``, ``tools/predict.py``)."""

    score_threshold: float = 0.05  # detections below this score are not evaluated or drawn
    iou_types: list[str] = field(default_factory=list)  # "bbox" / "segm"; empty = bbox, plus segm for mask_rcnn
    save_visualization: int = 4  # validation images drawn with predictions after training (0 = none)
    draw_threshold: float = 0.5  # score threshold for drawn predictions
    backend: str = "faster_coco_eval"  # COCOeval implementation: "faster_coco_eval" | "pycocotools" (same metrics)


@dataclass
class ExperimentConfig:
    """One experiment: what to train, on what data, how, and where to write results."""

    task: str = "detection"  # "detection" | "classification"
    output_dir: str = "outputs/run"  # checkpoints, logs, resolved config, evaluation results
    model: ModelConfig = field(default_factory=ModelConfig)  # detection model
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)  # classification model
    data: DataConfig = field(default_factory=DataConfig)  # datasets and loaders
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimizer and schedule
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # Lightning trainer
    eval: EvalConfig = field(default_factory=EvalConfig)  # evaluation


class ConfigError(ValueError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value, include cycle)."""


def _schema() -> DictConfig:
    return OmegaConf.structured(ExperimentConfig)


def _choice_table() -> dict[str, Callable[[], list[str]]]:
    """Config keys with a fixed set of values -> a function listing them (imports only when checked)."""

    def backbones() -> list[str]:
        from sasa_det.backbones import list_backbones

        return list_backbones()

    def resnet(attr: str) -> Callable[[], list[str]]:
        def values() -> list[str]:
            from sasa_det.backbones import resnet

            return list(getattr(resnet, attr))

        return values

    def sasa_impls() -> list[str]:
        from sasa_det.layers import available_local_attention_impls

        return available_local_attention_impls()

    def detectors(attr: str, module: str) -> Callable[[], list[str]]:
        def values() -> list[str]:
            import importlib

            return list(getattr(importlib.import_module(f"sasa_det.detectors.{module}"), attr))

        return values

    def optim(attr: str) -> Callable[[], list[str]]:
        def values() -> list[str]:
            from sasa_det.engine import optim as optim_module

            return list(getattr(optim_module, attr))

        return values

    def data_checks(attr: str) -> Callable[[], list[str]]:
        def values() -> list[str]:
            from sasa_det.data import validation

            return list(getattr(validation, attr))

        return values

    table: dict[str, Callable[[], list[str]]] = {
        "task": lambda: list(TASKS),
        "model.arch": detectors("ARCHS", "build"),
        "model.fpn": detectors("FPN_KINDS", "backbone_with_fpn"),
        "model.head": detectors("HEAD_KINDS", "retinanet"),
        "model.head_norm": lambda: ["none", "group"],
        "optim.name": optim("OPTIMIZERS"),
        "optim.schedule": optim("SCHEDULES"),
        "eval.iou_types": lambda: ["bbox", "segm"],
        "data.check_images": data_checks("CHECK_LEVELS"),
        "data.on_bad_records": data_checks("BAD_RECORD_POLICIES"),
    }
    for section in ("model", "classifier"):
        table[f"{section}.backbone.name"] = backbones
        table[f"{section}.backbone.stage_ops"] = resnet("STAGE_OPS")
        table[f"{section}.backbone.stem"] = resnet("STEMS")
        table[f"{section}.backbone.norm"] = resnet("NORMS")
        table[f"{section}.sasa.impl"] = sasa_impls
    return table


def _check_choices(node: DictConfig, origin: str) -> None:
    """Raise ConfigError for any key of ``node`` whose value (or list entry) is not one of its choices."""
    for key, choices in _choice_table().items():
        value = OmegaConf.select(node, key, default=None, throw_on_missing=False)
        if value is None:
            continue
        values = list(value) if isinstance(value, ListConfig) else [value]
        valid = choices()
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
    _expand_shorthands(raw)
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
        cfg = _merge_checked(cfg, update, f"command-line override {item!r}")
        _check_choices(update, f"command-line override {item!r}")
    return cfg


def validate_config(cfg: DictConfig) -> DictConfig:
    """Check values the type system cannot (choices, ranges); returns ``cfg``.

    Raises:
        ConfigError: naming the key, the bad value and the accepted values.
    """
    _check_choices(cfg, "config")
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
    return validate_config(cfg)


def config_to_dict(cfg: DictConfig) -> dict:
    """The config as a plain, interpolation-resolved ``dict`` (what checkpoints store)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def config_from_dict(data: dict, overrides: Optional[list[str]] = None) -> DictConfig:
    """Rebuild a structured config from :func:`config_to_dict` output (e.g. a checkpoint's), then apply overrides."""
    cfg = _merge_checked(_schema(), OmegaConf.create(data), "stored config")
    cfg = apply_overrides(cfg, overrides)
    return validate_config(cfg)


def save_config(cfg: DictConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML to ``path`` (parent directories created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(config_to_dict(cfg)), out)
    return out
