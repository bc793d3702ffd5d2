"""Library entry points behind ``tools/train.py``, ``tools/eval.py`` and ``tools/predict.py``.

``train(cfg)`` builds the data module, the LightningModule and a ``pytorch_lightning.Trainer`` from an
experiment config and fits; ``evaluate(ckpt)`` rebuilds everything from a checkpoint (its stored config) and
runs one validation pass; ``predict(ckpt, images)`` draws a checkpoint's detections on image files.

Output directory of a training run (``cfg.output_dir``)::

    config.yaml              the resolved config
    checkpoints/             best-*.ckpt (highest val/mAP, or val/top1 for classification) and last.ckpt
    logs/version_N/          CSV metrics (metrics.csv) and hparams.yaml
    tensorboard/version_N/   TensorBoard events (when tensorboard is installed)
    metrics.json             the last validation's metrics
    per_class.md             per-class AP table of the last validation (detection only)
    predictions.png          validation images with the final model's detections (detection only)
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from sasa_det.config import config_from_dict, config_to_dict, save_config
from sasa_det.engine.callbacks import (
    CocoSummaryPrinter,
    ExperimentConfigInCheckpoint,
    ValidationRecorder,
    format_coco_summary,
)

__all__ = [
    "build_datamodule",
    "build_module",
    "build_trainer",
    "evaluate",
    "load_checkpoint_config",
    "load_module",
    "predict",
    "prepare_data",
    "train",
]

logger = logging.getLogger(__name__)

# Metric each task's ModelCheckpoint keeps the best of (mode "max").
_MONITOR = {"detection": "val/mAP", "classification": "val/top1"}


# ---------------------------------------------------------------------------------------------- data
def prepare_data(cfg: DictConfig) -> DictConfig:
    """Fill the detection data paths from ``data.shapes`` (generating the dataset when missing).

    With ``data.shapes.root`` set, the shapes dataset is written there on first use (the generator skips
    an existing complete dataset, so every DDP rank may call this) and ``data.train_images`` /
    ``train_ann`` / ``val_images`` / ``val_ann`` point into it. Returns a new config.
    """
    shapes = cfg.data.shapes
    if cfg.task != "detection" or shapes.root is None:
        return cfg
    from sasa_det.data import make_shapes_dataset

    paths = make_shapes_dataset(
        shapes.root,
        num_train=shapes.num_train,
        num_val=shapes.num_val,
        image_size=shapes.image_size,
        seed=shapes.seed,
        min_objects=shapes.min_objects,
        max_objects=shapes.max_objects,
    )
    cfg = cfg.copy()
    for key, value in paths.items():
        cfg.data[key] = value
    return cfg


def _with_masks(cfg: DictConfig) -> bool:
    return bool(cfg.data.with_masks) if cfg.data.with_masks is not None else cfg.model.arch == "mask_rcnn"


def build_datamodule(cfg: DictConfig, train: bool = True) -> pl.LightningDataModule:
    """The task's data module: ``CocoDataModule`` (detection) or ``ImageFolderDataModule`` (classification).

    Args:
        cfg: experiment config (after :func:`prepare_data`).
        train: include the training split (False: validation only, for evaluation).

    Raises:
        ValueError: a split's paths are missing from the config.
    """
    data = cfg.data
    if cfg.task == "classification":
        from sasa_det.data.image_folder import ImageFolderDataModule

        if data.val_dir is None or (train and data.train_dir is None):
            raise ValueError("classification needs data.train_dir and data.val_dir (ImageFolder layout)")
        return ImageFolderDataModule(
            # Evaluation reads only the validation tree; it stands in for a training tree that may be absent.
            train_dir=data.train_dir if train else (data.train_dir or data.val_dir),
            val_dir=data.val_dir,
            image_size=cfg.classifier.image_size,
            batch_size=data.batch_size,
            val_batch_size=data.val_batch_size,
            num_workers=data.num_workers,
        )
    from sasa_det.data import CocoDataModule

    if data.val_images is None or data.val_ann is None:
        raise ValueError("detection needs data.val_images and data.val_ann (or data.shapes.root)")
    if train and (data.train_images is None or data.train_ann is None):
        raise ValueError("training needs data.train_images and data.train_ann (or data.shapes.root)")
    return CocoDataModule(
        train_images=data.train_images if train else None,
        train_ann=data.train_ann if train else None,
        val_images=data.val_images,
        val_ann=data.val_ann,
        batch_size=data.batch_size,
        val_batch_size=data.val_batch_size,
        num_workers=data.num_workers,
        min_sizes=list(data.min_sizes),
        max_size=data.max_size,
        flip_prob=data.flip_prob,
        with_masks=_with_masks(cfg),
        keep_empty_train=data.keep_empty_train,
    )


def _complete_num_classes(cfg: DictConfig, datamodule: pl.LightningDataModule) -> DictConfig:
    """Set ``model.num_classes`` / ``classifier.num_classes`` from the dataset when null; check it otherwise."""
    section = cfg.model if cfg.task == "detection" else cfg.classifier
    key = "model.num_classes" if cfg.task == "detection" else "classifier.num_classes"
    found = int(datamodule.num_classes)
    if section.num_classes is None:
        cfg = cfg.copy()
        OmegaConf.update(cfg, key, found)
    elif section.num_classes < found:
        raise ValueError(f"{key}={section.num_classes} but the dataset has {found} classes; set {key}={found} or null")
    return cfg


# ---------------------------------------------------------------------------------------------- modules
def _classification_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``ClassificationModule`` keyword arguments from the ``classifier`` and ``optim`` sections."""
    overrides = dict(config_to_dict(cfg)["classifier"]["overrides"])
    overrides.setdefault("image_size", int(cfg.classifier.image_size))
    optim = cfg.optim
    return {
        "backbone": cfg.classifier.backbone,
        "num_classes": int(cfg.classifier.num_classes),
        "backbone_overrides": overrides,
        "backbone_weights": cfg.classifier.weights,
        "label_smoothing": float(cfg.classifier.label_smoothing),
        "optimizer": optim.name,
        "lr": float(optim.lr),
        "momentum": float(optim.momentum),
        "nesterov": bool(optim.nesterov),
        "weight_decay": float(optim.weight_decay),
        "betas": [float(b) for b in optim.betas],
        "schedule": optim.schedule,
        "warmup_epochs": float(optim.warmup_epochs),
        "warmup_steps": optim.warmup_steps,
        "warmup_factor": float(optim.warmup_factor),
        "milestones": [float(m) for m in optim.milestones],
        "gamma": float(optim.gamma),
    }


def build_module(cfg: DictConfig, class_names: Optional[list[str]] = None) -> pl.LightningModule:
    """``DetectionModule`` (config + class names) or ``ClassificationModule`` (plain arguments) for ``cfg``."""
    if cfg.task == "classification":
        from sasa_det.engine.classification_module import ClassificationModule

        if cfg.classifier.num_classes is None:
            raise ValueError("classifier.num_classes is not set; set it or let the trainer take it from the dataset")
        return ClassificationModule(**_classification_kwargs(cfg))
    from sasa_det.engine.detection_module import DetectionModule

    return DetectionModule(config_to_dict(cfg), class_names=class_names)


def load_checkpoint_config(ckpt_path: str | os.PathLike, overrides: Optional[Sequence[str]] = None) -> tuple[DictConfig, dict]:
    """Read a checkpoint (``weights_only=True``) and rebuild its experiment config.

    ``model.backbone_weights`` / ``classifier.weights`` are cleared: the checkpoint holds all weights.

    Returns:
        ``(cfg, checkpoint)``: the config with ``overrides`` applied, and the loaded checkpoint dict.

    Raises:
        ValueError: the checkpoint holds no ``config`` hyper-parameter (not written by this package).
    """
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    stored = checkpoint.get(ExperimentConfigInCheckpoint.KEY) or (checkpoint.get("hyper_parameters") or {}).get("config")
    if stored is None:
        raise ValueError(f"{ckpt_path} holds no experiment config; it was not written by sasa_det's train()")
    cfg = config_from_dict(stored, list(overrides or []))
    cfg.model.backbone_weights = None
    cfg.classifier.weights = None
    return cfg, checkpoint


def load_module(ckpt_path: str | os.PathLike, overrides: Optional[Sequence[str]] = None) -> tuple[pl.LightningModule, DictConfig]:
    """Rebuild the LightningModule of a checkpoint and load its weights; returns ``(module, cfg)``."""
    cfg, checkpoint = load_checkpoint_config(ckpt_path, overrides)
    class_names = (checkpoint.get("hyper_parameters") or {}).get("class_names")
    module = build_module(cfg, class_names)
    module.load_state_dict(checkpoint["state_dict"])
    return module, cfg


# ---------------------------------------------------------------------------------------------- trainer
def _loggers(output_dir: Path) -> list:
    loggers: list = [CSVLogger(save_dir=str(output_dir), name="logs")]
    if importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None:
        loggers.append(TensorBoardLogger(save_dir=str(output_dir), name="tensorboard", default_hp_metric=False))
    return loggers


def build_trainer(
    cfg: DictConfig,
    callbacks: Optional[list[pl.Callback]] = None,
    loggers: Any = False,
    **extra: Any,
) -> pl.Trainer:
    """A ``pl.Trainer`` from the ``trainer`` and ``optim.grad_clip`` sections (``extra`` overrides arguments)."""
    t = cfg.trainer
    kwargs: dict[str, Any] = {
        "default_root_dir": str(cfg.output_dir),
        "max_epochs": t.max_epochs,
        "max_steps": t.max_steps,
        "devices": OmegaConf.to_object(t.devices) if OmegaConf.is_list(t.devices) else t.devices,
        "num_nodes": t.num_nodes,
        "accelerator": t.accelerator,
        "strategy": t.strategy,
        "precision": t.precision,
        "sync_batchnorm": t.sync_batchnorm,
        "log_every_n_steps": t.log_every_n_steps,
        "check_val_every_n_epoch": t.check_val_every_n_epoch,
        "deterministic": t.deterministic,
        "accumulate_grad_batches": t.accumulate_grad_batches,
        "enable_progress_bar": t.enable_progress_bar,
        "callbacks": callbacks or [],
        "logger": loggers,
    }
    if t.limit_train_batches is not None:
        kwargs["limit_train_batches"] = t.limit_train_batches
    if t.limit_val_batches is not None:
        kwargs["limit_val_batches"] = t.limit_val_batches
    if cfg.optim.grad_clip is not None:
        kwargs["gradient_clip_val"] = float(cfg.optim.grad_clip)
        kwargs["gradient_clip_algorithm"] = "norm"
    kwargs.update(extra)
    return pl.Trainer(**kwargs)


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def _final_metrics(trainer: pl.Trainer, module: pl.LightningModule, datamodule, recorder: ValidationRecorder) -> dict[str, float]:
    """The metrics of the final weights: the last validation's, or a fresh validation if training ended
    after it (e.g. ``max_steps`` mid-epoch, or ``check_val_every_n_epoch`` not dividing the epochs)."""
    if recorder.step != trainer.global_step or recorder.metrics is None:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    return dict(recorder.metrics or {})


@torch.no_grad()
def save_predictions_png(module, dataset, path: Path, count: int, score_threshold: float) -> Optional[Path]:
    """Draw ``module``'s detections on the first ``count`` images of ``dataset`` into one PNG grid."""
    from sasa_det.evaluation import save_detection_grid

    count = min(int(count), len(dataset))
    if count <= 0:
        return None
    was_training = module.training
    module.eval()
    images = [dataset[i][0] for i in range(count)]
    predictions = [{k: v.cpu() for k, v in p.items()} for p in module([im.to(module.device) for im in images])]
    module.train(was_training)
    return save_detection_grid(images, predictions, path, class_names=getattr(module, "class_names", None), score_threshold=score_threshold)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train the experiment described by ``cfg`` (from :func:`sasa_det.config.load_config`).

    Detection (``task: detection``) fits a :class:`~sasa_det.engine.detection_module.DetectionModule` on a
    ``CocoDataModule``; classification a ``ClassificationModule`` on an ``ImageFolderDataModule``. Every DDP
    rank runs this function; files are written by global rank 0.

    Returns:
        ``{"metrics": {name: value} of the final weights' validation, "best_checkpoint": path,
        "last_checkpoint": path, "output_dir": path, "config_path": path, "predictions_png": path | None}``.
    """
    pl.seed_everything(cfg.trainer.seed, workers=True)
    cfg = prepare_data(cfg)
    datamodule = build_datamodule(cfg, train=True)
    cfg = _complete_num_classes(cfg, datamodule)
    class_names = list(datamodule.class_names) if hasattr(datamodule, "class_names") else None
    module = build_module(cfg, class_names)

    output_dir = Path(cfg.output_dir)
    monitor = _MONITOR[cfg.task]
    checkpoint = ModelCheckpoint(
        dirpath=str(output_dir / "checkpoints"),
        filename="best-epoch{epoch:03d}-step{step:06d}",
        auto_insert_metric_name=False,
        monitor=monitor,
        mode="max",
        save_top_k=1,
        save_last=True,
    )
    recorder = ValidationRecorder()
    callbacks: list[pl.Callback] = [
        checkpoint,
        LearningRateMonitor(logging_interval="step"),
        ExperimentConfigInCheckpoint(config_to_dict(cfg)),
        recorder,
    ]
    if cfg.task == "detection":
        callbacks.append(CocoSummaryPrinter())
    trainer = build_trainer(cfg, callbacks=callbacks, loggers=_loggers(output_dir))
    config_path = output_dir / "config.yaml"
    if trainer.is_global_zero:
        save_config(cfg, config_path)

    trainer.fit(module, datamodule=datamodule)
    metrics = _final_metrics(trainer, module, datamodule, recorder)

    result: dict[str, Any] = {
        "metrics": metrics,
        "best_checkpoint": checkpoint.best_model_path or None,
        "last_checkpoint": checkpoint.last_model_path or None,
        "output_dir": str(output_dir),
        "config_path": str(config_path),
        "predictions_png": None,
    }
    if trainer.is_global_zero:
        _write_json(output_dir / "metrics.json", metrics)
        evaluator = getattr(module, "evaluator", None)
        if cfg.task == "detection" and evaluator is not None and metrics:
            table = evaluator.per_class_table()
            (output_dir / "per_class.md").write_text(table + "\n")
            print(f"Final COCO metrics\n{format_coco_summary(metrics)}\n{table}", flush=True)
        if cfg.task == "detection" and cfg.eval.save_visualization > 0:
            png = save_predictions_png(
                module, datamodule.val_dataset, output_dir / "predictions.png", cfg.eval.save_visualization, cfg.eval.draw_threshold
            )
            result["predictions_png"] = str(png) if png else None
    return result


def evaluate(
    ckpt_path: str | os.PathLike,
    overrides: Optional[Sequence[str]] = None,
    output_dir: Optional[str | os.PathLike] = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on its config's validation set (one validation pass with a Trainer).

    Args:
        ckpt_path: a checkpoint written by :func:`train`.
        overrides: ``key=value`` overrides of the stored config (e.g. ``data.val_ann=...``,
            ``trainer.devices=2``, ``eval.score_threshold=0.01``).
        output_dir: where results go (default: ``eval_<checkpoint name>/`` beside the checkpoint).

    Writes (global rank 0) ``metrics.json``, and for detection ``detections_<iou>.json`` (COCO results),
    ``per_class.md`` (per-class AP table) and ``coco_summary.txt``.

    Returns:
        ``{"metrics": {name: value}, "output_dir": path}``.
    """
    ckpt_path = Path(ckpt_path)
    module, cfg = load_module(ckpt_path, overrides)
    cfg = prepare_data(cfg)
    datamodule = build_datamodule(cfg, train=False)
    if cfg.task == "detection":
        module.set_evaluation_dataset(datamodule.val_dataset)
    out = Path(output_dir) if output_dir is not None else ckpt_path.resolve().parent / f"eval_{ckpt_path.stem}"
    recorder = ValidationRecorder()
    trainer = build_trainer(cfg, callbacks=[recorder], loggers=False, enable_checkpointing=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = dict(recorder.metrics or {})
    if trainer.is_global_zero:
        _write_json(out / "metrics.json", metrics)
        evaluator = getattr(module, "evaluator", None)
        if cfg.task == "detection" and evaluator is not None:
            for iou_type in evaluator.iou_types:
                _write_json(out / f"detections_{iou_type}.json", evaluator.detections_json(iou_type))
            (out / "per_class.md").write_text(evaluator.per_class_table() + "\n")
            (out / "coco_summary.txt").write_text(evaluator.summary_text())
    return {"metrics": metrics, "output_dir": str(out)}


@torch.no_grad()
def predict(
    ckpt_path: str | os.PathLike,
    image_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    overrides: Optional[Sequence[str]] = None,
    score_threshold: Optional[float] = None,
    device: str = "cpu",
) -> list[Path]:
    """Draw a detection checkpoint's predictions on image files, one PNG per image in ``out_dir``.

    Args:
        ckpt_path: a detection checkpoint written by :func:`train`.
        image_paths: image files (any format PIL reads; converted to RGB).
        out_dir: output folder; ``<image stem>.png`` per input.
        overrides: ``key=value`` overrides of the stored config (e.g. ``model.min_size=...``).
        score_threshold: drawn detections' minimum score (default ``eval.draw_threshold``).
        device: torch device to run on.

    Returns:
        The written PNG paths.
    """
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    from sasa_det.evaluation import draw_detections

    module, cfg = load_module(ckpt_path, overrides)
    if cfg.task != "detection":
        raise ValueError(f"predict draws detections; {ckpt_path} is a {cfg.task!r} checkpoint")
    module.eval().to(device)
    threshold = cfg.eval.draw_threshold if score_threshold is None else float(score_threshold)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for image_path in image_paths:
        with Image.open(image_path) as pil:
            image = pil_to_tensor(pil.convert("RGB")).float() / 255.0
        prediction = {k: v.cpu() for k, v in module([image.to(device)])[0].items()}
        drawn = draw_detections(image, prediction, class_names=module.class_names, score_threshold=threshold)
        target = out / f"{Path(image_path).stem}.png"
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(target)
        written.append(target)
    return written
