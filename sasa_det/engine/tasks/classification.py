"""The classification task: backbone pre-training / fine-tuning on an image-folder tree."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from sasa_det.backbones import ImageClassifier, backbone_from_options
from sasa_det.data.image_folder import ImageFolderDataModule
from sasa_det.engine.run.run_directory import RunDirectory
from sasa_det.engine.tasks.classification_module import ClassificationModule
from sasa_det.engine.tasks.classification_options import ClassifierOptions
from sasa_det.engine.tasks.task import DataPath, Task

__all__ = ["ClassificationTask", "build_classification_model"]


def build_classification_model(section: ClassifierOptions) -> ImageClassifier:
    """The classifier a ``classifier`` section describes: its backbone (the C5 feature, AA tables sized for
    ``image_size``) with global pooling and a linear head (the one place that reads the section)."""
    if section.num_classes is None:
        raise ValueError("classifier.num_classes is not set; set it or let the trainer take it from the dataset")
    options = replace(section.backbone, image_size=section.backbone.image_size or section.image_size)
    backbone = backbone_from_options(options, section.sasa, out_features=("C5",))
    return ImageClassifier(backbone, num_classes=section.num_classes, dropout=section.dropout)


class ClassificationTask(Task):
    """Image classification on an ImageFolder tree (``task: classification``)."""

    name = "classification"
    monitor = "val/top1"
    model_section = "classifier"
    data_paths: tuple[DataPath, ...] = (
        ("train_dir", "folder", "train", "the training ImageFolder root (one sub-folder per class)"),
        ("val_dir", "folder", "val", "the validation ImageFolder root (one sub-folder per class)"),
    )

    def build_datamodule(
        self, cfg: DictConfig, train: bool = True, run_dir: Optional[RunDirectory] = None
    ) -> pl.LightningDataModule:
        """An ``ImageFolderDataModule``; evaluation (``train=False``) reads only the validation tree."""
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
        """A ``ClassificationModule`` over the ``classifier`` section's model (its backbone weights loaded when
        ``classifier.backbone.weights`` names them), with the ``optim`` settings."""
        return ClassificationModule(
            build_classification_model(OmegaConf.to_object(cfg.classifier)),
            optim=OmegaConf.to_object(cfg.optim),
            label_smoothing=float(cfg.classifier.label_smoothing),
        )

    def network(self, module: pl.LightningModule) -> tuple[Any, Optional[str]]:
        return module.model, "backbone."
