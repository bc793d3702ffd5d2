"""The classification task: backbone pre-training / fine-tuning on an image-folder tree."""

from __future__ import annotations

from typing import Any, Optional

import pytorch_lightning as pl
from omegaconf import DictConfig

from sasa_det.config import config_to_dict
from sasa_det.engine.task import Task, backbone_build_arguments

__all__ = ["ClassificationTask", "classifier_arguments"]


def classifier_arguments(cfg: DictConfig) -> dict[str, Any]:
    """``build_classifier`` keyword arguments (preset ``name`` included) from the ``classifier`` section."""
    section = cfg.classifier
    if section.num_classes is None:
        raise ValueError("classifier.num_classes is not set; set it or let the trainer take it from the dataset")
    name, overrides, _ = backbone_build_arguments(section.backbone)
    overrides.setdefault("image_size", int(section.image_size))
    return {
        "name": name,
        "num_classes": int(section.num_classes),
        "dropout": float(section.dropout),
        "sasa": config_to_dict(section.sasa),
        **overrides,
    }


class ClassificationTask(Task):
    """Image classification on an ImageFolder tree (``task: classification``)."""

    name = "classification"
    monitor = "val/top1"
    model_section = "classifier"

    def build_datamodule(self, cfg: DictConfig, train: bool = True) -> pl.LightningDataModule:
        """An ``ImageFolderDataModule``; evaluation (``train=False``) reads only the validation tree."""
        from sasa_det.data.image_folder import ImageFolderDataModule

        data = cfg.data
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
            seed=cfg.trainer.seed,
        )

    def build_module(self, cfg: DictConfig, class_names: Optional[list[str]] = None) -> pl.LightningModule:
        """A ``ClassificationModule``; ``classifier.backbone.weights`` are loaded into its backbone."""
        from sasa_det.backbones import load_backbone_weights
        from sasa_det.engine.classification_module import ClassificationModule

        module = ClassificationModule(
            classifier_arguments(cfg),
            optim=config_to_dict(cfg.optim),
            label_smoothing=float(cfg.classifier.label_smoothing),
        )
        if cfg.classifier.backbone.weights:
            load_backbone_weights(module.model.backbone, cfg.classifier.backbone.weights)
        return module

    def network(self, module: pl.LightningModule) -> tuple[Any, Optional[str]]:
        return module.model, "backbone."
