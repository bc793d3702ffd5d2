"""The detection task: COCO-format data, a torchvision detector on our backbones, COCO metrics."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sasa_det.backbones import ResNetOptions, backbone_from_options
from sasa_det.config import ConfigError
from sasa_det.data import CocoDataModule, CocoDataOptions
from sasa_det.detectors import build_detector
from sasa_det.engine.run.run_directory import RunDirectory
from sasa_det.engine.tasks.callbacks import CocoSummaryPrinter, format_coco_summary
from sasa_det.engine.tasks.detection_module import DetectionModule
from sasa_det.engine.tasks.detection_options import DetectionModelOptions
from sasa_det.engine.tasks.task import DataPath, Task
from sasa_det.layers import SasaOptions

__all__ = ["DetectionTask", "build_detection_model", "coco_data_options", "iou_types_for", "preset_detection_model"]

logger = logging.getLogger(__name__)

_PATH_KEYS = ("train_images", "train_ann", "val_images", "val_ann")
#: The data paths of a detection config.
DATA_PATHS: tuple[DataPath, ...] = (
    ("train_ann", "file", "train", "the training split's COCO annotation JSON"),
    ("train_images", "folder", "train", "the folder the training JSON's file_name entries are relative to"),
    ("val_ann", "file", "val", "the validation split's COCO annotation JSON"),
    ("val_images", "folder", "val", "the folder the validation JSON's file_name entries are relative to"),
)


def build_detection_model(model: DetectionModelOptions) -> nn.Module:
    """The detector a ``model`` section describes: its backbone, built for the architecture's features and
    largest input, then the detector over it (the one place that reads the section)."""
    if model.num_classes is None:
        raise ValueError("model.num_classes is not set; set it or let the trainer take it from the dataset")
    options = replace(model.backbone, image_size=model.backbone.image_size or model.backbone_image_size())
    backbone = backbone_from_options(options, model.sasa, out_features=model.backbone_features())
    return build_detector(model, model.num_classes, backbone, model.sasa)


def preset_detection_model(
    arch: str = "retinanet",
    num_classes: int = 80,
    backbone: str = "resnet50",
    backbone_overrides: dict[str, Any] | None = None,
    sasa: SasaOptions | None = None,
    **options: Any,
) -> nn.Module:
    """:func:`build_detection_model` of a backbone preset with ``backbone_overrides``
    (:class:`~sasa_det.backbones.ResNetOptions` fields) and detector ``options``
    (:class:`~sasa_det.detectors.DetectorOptions` fields): the shortcut the analyses use."""
    model = DetectionModelOptions(
        arch=arch,
        num_classes=num_classes,
        backbone=ResNetOptions(backbone, **(backbone_overrides or {})),
        sasa=sasa or SasaOptions(),
        **options,
    )
    return build_detection_model(model)


def coco_data_options(cfg: DictConfig) -> CocoDataOptions:
    """The ``data`` section as the COCO data module reads it, masks loaded when the model predicts them."""
    data = OmegaConf.to_object(cfg.data)
    predicts_masks = OmegaConf.to_object(cfg.model).predicts_masks()
    return replace(data, with_masks=predicts_masks if data.with_masks is None else data.with_masks)


def iou_types_for(cfg: DictConfig) -> tuple[str, ...]:
    """IoU types to evaluate: ``eval.iou_types`` if given, else bbox (+ segm for Mask R-CNN)."""
    chosen = tuple(cfg.eval.iou_types or ())
    if chosen:
        return chosen
    return ("bbox", "segm") if OmegaConf.to_object(cfg.model).predicts_masks() else ("bbox",)


class DetectionTask(Task):
    """RetinaNet / Faster R-CNN / Mask R-CNN on COCO-format data (``task: detection``)."""

    name = "detection"
    monitor = "val/mAP"
    model_section = "model"
    data_paths = DATA_PATHS

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
        from sasa_det.data.shapes.options import ShapesOptions

        options = ShapesOptions(**OmegaConf.to_container(shapes, resolve=True))
        paths = make_shapes_dataset(Path(shapes.root).resolve(), options)
        cfg = cfg.copy()
        for key, value in paths.items():
            cfg.data[key] = value
        cfg.data.shapes.root = None
        return cfg

    def build_datamodule(
        self, cfg: DictConfig, train: bool = True, run_dir: Optional[RunDirectory] = None
    ) -> pl.LightningDataModule:
        """A ``CocoDataModule`` (``train=False``: validation split only) writing its data reports into ``run_dir``."""
        options = coco_data_options(cfg)
        if options.val_images is None or options.val_ann is None:
            raise ValueError("detection needs data.val_images and data.val_ann (or data.shapes.root)")
        if not train:
            options = replace(options, train_images=None, train_ann=None)
        elif options.train_images is None or options.train_ann is None:
            raise ValueError("training needs data.train_images and data.train_ann (or data.shapes.root)")
        return CocoDataModule(
            options,
            seed=cfg.trainer.seed,
            report_dir=run_dir.root if run_dir is not None else None,
            progress=cfg.trainer.enable_progress_bar,
        )

    def complete_config(self, cfg: DictConfig, datamodule: pl.LightningDataModule) -> DictConfig:
        """``model.num_classes`` from the dataset when null; a set value must equal the dataset's class count."""
        from sasa_det.data import check_num_classes

        check_num_classes(cfg.model.num_classes, datamodule.class_names, cfg.data.train_ann or cfg.data.val_ann)
        return super().complete_config(cfg, datamodule)

    def build_module(self, cfg: DictConfig, class_names: Optional[list[str]] = None) -> pl.LightningModule:
        """A ``DetectionModule`` over the ``model`` section's detector, with the ``optim`` and ``eval`` settings."""
        return DetectionModule(
            build_detection_model(OmegaConf.to_object(cfg.model)),
            optim=OmegaConf.to_object(cfg.optim),
            iou_types=iou_types_for(cfg),
            score_threshold=float(cfg.eval.score_threshold),
            class_names=class_names,
            eval_backend=cfg.eval.backend,
        )

    def network(self, module: pl.LightningModule) -> tuple[Any, Optional[str]]:
        return module.model, "backbone.body."

    def callbacks(self, cfg: DictConfig, title: Optional[str] = None) -> list[pl.Callback]:
        return [CocoSummaryPrinter(title=title)]

    def use_test_time_augmentation(self, module: pl.LightningModule, cfg: DictConfig) -> bool:
        """``eval.tta`` on ``module`` when it has more than plain inference's one view."""
        options = OmegaConf.to_object(cfg.eval.tta)
        if options.views() == [("none", 1.0)]:
            return False
        module.set_test_time_augmentation(options)
        return True

    def attach_evaluation_data(self, module: pl.LightningModule, datamodule: pl.LightningDataModule) -> None:
        """The validation set's COCO ground truth for ``module``'s evaluator, after checking that the model was
        trained on the same classes (a mismatch would evaluate other classes' names silently).

        Raises:
            ConfigError: naming both class lists and what to do.
        """
        theirs = list(datamodule.class_names)
        ours = list(module.class_names) if module.class_names is not None else None  # None: an older checkpoint
        if ours is not None and ours != theirs:
            raise ConfigError(
                f"the checkpoint was trained on {len(ours)} classes {ours[:10]} but the validation set "
                f"{datamodule.options.val_ann} has {len(theirs)} classes {theirs[:10]}: evaluate on data with the "
                "checkpoint's classes (data.val_ann=..., data.val_images=...), or fine-tune on this data first with "
                "model.init_from=CHECKPOINT"
            )
        module.set_evaluation_dataset(datamodule.val_dataset)

    def write_report(self, module, datamodule, metrics, cfg, run_dir: RunDirectory) -> dict[str, Optional[str]]:
        """``per_class.md``, ``evaluation.json`` (per-class AP, PR curves), the printed final COCO table and
        ``predictions.png`` (validation images drawn)."""
        from sasa_det.evaluation import evaluation_record, save_prediction_grid

        written: dict[str, Optional[str]] = {"predictions_png": None}
        evaluator = getattr(module, "evaluator", None)
        if evaluator is not None and metrics:
            table = evaluator.per_class_table()
            run_dir.write_text(run_dir.per_class_file, table + "\n")
            run_dir.write_json(run_dir.evaluation_file, evaluation_record(evaluator), indent=1)
            print(
                f"Final COCO metrics (step {module.global_step})\n{format_coco_summary(metrics)}\n{table}", flush=True
            )
        if cfg.eval.save_visualization > 0:
            png = save_prediction_grid(
                module.model,
                datamodule.val_dataset,
                run_dir.predictions_png,
                cfg.eval.save_visualization,
                cfg.eval.draw_threshold,
                class_names=module.class_names,
            )
            written["predictions_png"] = str(png) if png else None
        return written

    def write_evaluation(self, module: pl.LightningModule, out: RunDirectory, cfg: DictConfig) -> None:
        """``detections_<iou>.json`` (COCO results), ``per_class.md``, ``evaluation.json`` (per-class AP, PR
        curves), ``coco_summary.txt`` and, with ``eval.error_analysis``, the confusion matrix and false
        positives by kind (:func:`sasa_det.evaluation.write_error_analysis`) under ``errors/``."""
        from sasa_det.evaluation import evaluation_record

        evaluator = module.evaluator
        for iou_type in evaluator.iou_types:
            out.write_json(out.detections_file(iou_type), evaluator.detections_json(iou_type), indent=None)
        out.write_text(out.per_class_file, evaluator.per_class_table() + "\n")
        out.write_json(out.evaluation_file, evaluation_record(evaluator), indent=1)
        out.write_text(out.coco_summary_file, evaluator.summary_text())
        if cfg.eval.error_analysis:
            from sasa_det.evaluation import analyze_errors, write_error_analysis

            analysis = analyze_errors(
                evaluator.coco_gt.dataset,
                evaluator.detections_json("bbox"),
                cfg.eval.error_iou_threshold,
                cfg.eval.error_score_threshold,
            )
            for path in write_error_analysis(analysis, out.errors_dir):
                logger.info("error analysis: %s", path)
