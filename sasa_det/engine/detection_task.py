"""The detection task: COCO-format data, a torchvision detector on our backbones, COCO metrics."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from omegaconf import DictConfig

from sasa_det.config import ConfigError, config_to_dict
from sasa_det.engine.callbacks import CocoSummaryPrinter, format_coco_summary
from sasa_det.engine.task import Task, backbone_build_arguments

__all__ = ["DetectionTask", "detector_arguments", "iou_types_for"]

logger = logging.getLogger(__name__)

_PATH_KEYS = ("train_images", "train_ann", "val_images", "val_ann")


def detector_arguments(cfg: DictConfig) -> dict[str, Any]:
    """``build_detector`` keyword arguments from the ``model`` section (the one place that reads it)."""
    model = cfg.model
    if model.num_classes is None:
        raise ValueError("model.num_classes is not set; set it or let the trainer take it from the dataset")
    name, overrides, weights = backbone_build_arguments(model.backbone)
    return {
        "arch": model.arch,
        "num_classes": int(model.num_classes),
        "backbone": name,
        "backbone_overrides": overrides,
        "backbone_weights": weights,
        "fpn": model.fpn,
        "head": model.head,
        "fpn_channels": int(model.fpn_channels),
        "head_norm": model.head_norm,
        "sasa": config_to_dict(model.sasa),
        "min_size": int(model.min_size),
        "max_size": int(model.max_size),
        "detector_kwargs": config_to_dict(model.detector_kwargs),
    }


def iou_types_for(cfg: DictConfig) -> tuple[str, ...]:
    """IoU types to evaluate: ``eval.iou_types`` if given, else bbox (+ segm for Mask R-CNN)."""
    chosen = tuple(cfg.eval.iou_types or ())
    if chosen:
        return chosen
    return ("bbox", "segm") if cfg.model.arch == "mask_rcnn" else ("bbox",)


class DetectionTask(Task):
    """RetinaNet / Faster R-CNN / Mask R-CNN on COCO-format data (``task: detection``)."""

    name = "detection"
    monitor = "val/mAP"
    model_section = "model"

    def prepare(self, cfg: DictConfig) -> DictConfig:
        """Fill the four data paths from ``data.shapes`` (generating the dataset when missing).

        Paths the user set win over ``data.shapes.root`` (e.g. a config that inherits the demo's dataset);
        setting only some of them while ``data.shapes.root`` is set is an error naming the keys. The returned
        config holds the generated dataset's absolute paths and ``data.shapes.root`` null, so the config
        stored in a checkpoint names the very files trained on: evaluating it from another folder reads
        them (and says so if they are gone) instead of generating a new dataset there.
        """
        shapes = cfg.data.shapes
        if shapes.root is None:
            return cfg
        given = [key for key in _PATH_KEYS if cfg.data[key] is not None]
        if len(given) == len(_PATH_KEYS):
            logger.warning(
                "data.shapes.root=%s is ignored: data.train_images/train_ann/val_images/val_ann are set and win",
                shapes.root,
            )
            cfg = cfg.copy()
            cfg.data.shapes.root = None
            return cfg
        if given:
            raise ConfigError(
                f"data.shapes.root={shapes.root!r} (the synthetic dataset) and data.{', data.'.join(given)} are both set. "
                "To train on your own data set all four of data.train_images, data.train_ann, data.val_images, "
                "data.val_ann (then data.shapes is ignored), or set data.shapes.root=null; to use the synthetic "
                f"dataset remove data.{', data.'.join(given)}"
            )
        from sasa_det.data import make_shapes_dataset

        paths = make_shapes_dataset(
            Path(shapes.root).resolve(),
            num_train=shapes.num_train,
            num_val=shapes.num_val,
            image_size=shapes.image_size,
            seed=shapes.seed,
            min_objects=shapes.min_objects,
            max_objects=shapes.max_objects,
            classes=list(shapes.classes),
        )
        cfg = cfg.copy()
        for key, value in paths.items():
            cfg.data[key] = value
        cfg.data.shapes.root = None
        return cfg

    def build_datamodule(self, cfg: DictConfig, train: bool = True) -> pl.LightningDataModule:
        """A ``CocoDataModule`` (``train=False``: validation split only)."""
        from sasa_det.data import CocoDataModule

        data = cfg.data
        if data.val_images is None or data.val_ann is None:
            raise ValueError("detection needs data.val_images and data.val_ann (or data.shapes.root)")
        if train and (data.train_images is None or data.train_ann is None):
            raise ValueError("training needs data.train_images and data.train_ann (or data.shapes.root)")
        with_masks = bool(data.with_masks) if data.with_masks is not None else cfg.model.arch == "mask_rcnn"
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
            with_masks=with_masks,
            keep_empty_train=data.keep_empty_train,
            seed=cfg.trainer.seed,
            check_images=data.check_images,
            on_bad_records=data.on_bad_records,
            report_dir=cfg.output_dir if train else None,
            check_cache=data.check_cache,
            check_cache_dir=data.check_cache_dir,
            check_workers=data.check_workers,
            progress=cfg.trainer.enable_progress_bar,
        )

    def complete_config(self, cfg: DictConfig, datamodule: pl.LightningDataModule) -> DictConfig:
        """``model.num_classes`` from the dataset when null; a set value must equal the dataset's class count."""
        from sasa_det.data import check_num_classes

        check_num_classes(cfg.model.num_classes, datamodule.class_names, cfg.data.train_ann or cfg.data.val_ann)
        return super().complete_config(cfg, datamodule)

    def build_module(self, cfg: DictConfig, class_names: Optional[list[str]] = None) -> pl.LightningModule:
        """A ``DetectionModule`` from the ``model``, ``optim`` and ``eval`` sections."""
        from sasa_det.engine.detection_module import DetectionModule

        return DetectionModule(
            detector_arguments(cfg),
            optim=config_to_dict(cfg.optim),
            iou_types=iou_types_for(cfg),
            score_threshold=float(cfg.eval.score_threshold),
            class_names=class_names,
            eval_backend=cfg.eval.backend,
        )

    def network(self, module: pl.LightningModule) -> tuple[Any, Optional[str]]:
        return module.model, "backbone.body."

    def callbacks(self, cfg: DictConfig) -> list[pl.Callback]:
        return [CocoSummaryPrinter()]

    def attach_evaluation_data(self, module: pl.LightningModule, datamodule: pl.LightningDataModule) -> None:
        module.set_evaluation_dataset(datamodule.val_dataset)

    def write_report(self, module, datamodule, metrics, cfg, out: Path) -> dict[str, Optional[str]]:
        """``per_class.md``, ``evaluation.json`` (per-class AP, PR curves), the printed final COCO table and
        ``predictions.png`` (validation images drawn)."""
        from sasa_det.evaluation import EVALUATION_FILE, save_prediction_grid, write_evaluation_json

        written: dict[str, Optional[str]] = {"predictions_png": None}
        evaluator = getattr(module, "evaluator", None)
        if evaluator is not None and metrics:
            table = evaluator.per_class_table()
            (out / "per_class.md").write_text(table + "\n")
            write_evaluation_json(evaluator, out / EVALUATION_FILE)
            print(
                f"Final COCO metrics (step {module.global_step})\n{format_coco_summary(metrics)}\n{table}", flush=True
            )
        if cfg.eval.save_visualization > 0:
            png = save_prediction_grid(
                module.model,
                datamodule.val_dataset,
                out / "predictions.png",
                cfg.eval.save_visualization,
                cfg.eval.draw_threshold,
                class_names=module.class_names,
            )
            written["predictions_png"] = str(png) if png else None
        return written

    def write_evaluation(self, module: pl.LightningModule, out: Path) -> None:
        """``detections_<iou>.json`` (COCO results), ``per_class.md``, ``evaluation.json`` (per-class AP, PR
        curves) and ``coco_summary.txt``."""
        from sasa_det.evaluation import EVALUATION_FILE, write_evaluation_json

        evaluator = module.evaluator
        for iou_type in evaluator.iou_types:
            (out / f"detections_{iou_type}.json").write_text(json.dumps(evaluator.detections_json(iou_type)))
        (out / "per_class.md").write_text(evaluator.per_class_table() + "\n")
        write_evaluation_json(evaluator, out / EVALUATION_FILE)
        (out / "coco_summary.txt").write_text(evaluator.summary_text())
