"""``ClassificationModule``: pre-trains or fine-tunes a backbone preset as an image classifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from sasa_det.backbones import ImageClassifier
from sasa_det.optim import OptimSettings, configure_optimization

__all__ = ["ClassificationModule", "topk_correct"]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]) -> list[torch.Tensor]:
    """Number of samples whose label is among the ``k`` highest logits, for each ``k``.

    ``logits [N, C]``, ``labels [N]`` -> list of 0-d int64 tensors (one per ``k``).
    """
    top = logits.topk(max(ks), dim=1).indices  # [N, max k]
    hits = top.eq(labels[:, None])
    return [hits[:, :k].any(dim=1).sum() for k in ks]


class ClassificationModule(pl.LightningModule):
    """Lightning wrapper training an image classifier (e.g. from :func:`sasa_det.backbones.build_classifier`).

    The classifier is ``self.model`` (``self.model.backbone`` + ``self.model.fc``), so a checkpoint's
    ``state_dict`` has keys ``model.backbone.<ResNet names>`` and loads into a detector's backbone with
    :func:`sasa_det.backbones.load_backbone_weights`. The settings are saved as the checkpoint's
    hyper-parameters; the model is described by the experiment config stored beside them.

    Batches: ``(images [N, 3, H, W] float, labels [N] int64)`` (e.g.
    :class:`sasa_det.data.image_folder.ImageFolderDataModule`).

    Logged: ``train/loss``, ``train/top1`` every step; ``val/loss``, ``val/top1`` and, with at least 5
    classes, ``val/top5`` per validation epoch. Validation metrics are exact sums over the images each rank
    saw, added across ranks, divided by the number of images (``val/num_images``): under DDP every image is
    counted once (the validation sampler shards without padding).

    Args:
        model: the classifier, an :class:`~sasa_det.backbones.ImageClassifier`.
        optim: optimizer and schedule settings (:class:`~sasa_det.optim.OptimSettings`, or its fields as a mapping:
            what the checkpoint's hyper-parameters hold; default: its defaults); the SASA
            paper's ImageNet recipe is Nesterov SGD with a linear warm-up then cosine decay (Sec. 4.1).
        label_smoothing: cross-entropy label smoothing (0 = off; neither paper states one).
    """

    def __init__(
        self,
        model: ImageClassifier,
        optim: OptimSettings | Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        settings = OptimSettings(**optim) if isinstance(optim, Mapping) else optim or OptimSettings()
        self.save_hyperparameters({"optim": asdict(settings), "label_smoothing": float(label_smoothing)})
        self.optim_settings = settings
        self.label_smoothing = float(label_smoothing)
        self.model = model
        self.topk = (1, 5) if model.num_classes >= 5 else (1,)
        self._val_sums: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images [N, 3, H, W]`` -> logits ``[N, num_classes]``."""
        return self.model(images)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing, reduction=reduction)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.model(images)
        loss = self._loss(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss at step {self.global_step}; lower the learning rate or lengthen the warm-up"
            )
        n = labels.shape[0]
        (top1,) = topk_correct(logits.detach(), labels, (1,))
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=n)
        self.log("train/top1", top1.float() / n, batch_size=n)
        return loss

    def on_validation_epoch_start(self) -> None:
        # [loss sum, images, correct@k...] accumulated over this rank's images.
        self._val_sums = torch.zeros(2 + len(self.topk), dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        correct = topk_correct(logits, labels, self.topk)
        sums = [
            self._loss(logits, labels, reduction="sum").double(),
            torch.tensor(float(labels.shape[0]), device=self.device),
        ]
        self._val_sums += torch.stack(sums + [c.double() for c in correct])

    def on_validation_epoch_end(self) -> None:
        sums = self._val_sums
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        count = max(float(sums[1]), 1.0)
        metrics = {"val/loss": float(sums[0]) / count, "val/num_images": float(sums[1])}
        metrics.update({f"val/top{k}": float(c) / count for k, c in zip(self.topk, sums[2:])})
        for name, value in metrics.items():
            # Identical on every rank after the all-reduce; "max" keeps them as they are.
            self.log(name, value, prog_bar=name == "val/top1", sync_dist=True, reduce_fx="max")

    def configure_optimizers(self):
        """Optimizer and per-step schedule (:func:`sasa_det.optim.configure_optimization`)."""
        batch_size = getattr(self.trainer.datamodule, "batch_size", 1)
        return configure_optimization(
            self.model, self.optim_settings, self.trainer, batch_size, backbone=self.model.backbone
        )
