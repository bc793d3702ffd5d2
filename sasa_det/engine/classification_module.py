"""``ClassificationModule``: pre-trains or fine-tunes a backbone preset as an image classifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from sasa_det.backbones import build_classifier, load_backbone_weights
from sasa_det.engine.optim import build_optimizer, build_scheduler, schedule_lengths, training_steps

__all__ = ["ClassificationModule", "topk_correct"]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]) -> list[torch.Tensor]:
    """Number of samples whose label is among the ``k`` highest logits, for each ``k``.

    ``logits [N, C]``, ``labels [N]`` -> list of 0-d int64 tensors (one per ``k``).
    """
    top = logits.topk(max(ks), dim=1).indices  # [N, max k]
    hits = top.eq(labels[:, None])
    return [hits[:, :k].any(dim=1).sum() for k in ks]


class ClassificationModule(pl.LightningModule):
    """Lightning wrapper training ``build_classifier(backbone, num_classes, **backbone_overrides)``.

    The classifier is ``self.model`` (``self.model.backbone`` + ``self.model.fc``), so a checkpoint's
    ``state_dict`` has keys ``model.backbone.<ResNet names>`` and loads into a detector's backbone with
    :func:`sasa_det.backbones.load_backbone_weights`. All arguments are plain values and are saved as the
    checkpoint's hyper-parameters (a checkpoint alone rebuilds the module).

    Batches: ``(images [N, 3, H, W] float, labels [N] int64)`` (e.g.
    :class:`sasa_det.data.image_folder.ImageFolderDataModule`).

    Logged: ``train/loss``, ``train/top1``, ``train/lr`` every step; ``val/loss``, ``val/top1`` and, with at
    least 5 classes, ``val/top5`` per validation epoch (fractions in 0..1, averaged over samples).

    Args:
        backbone: a preset of :func:`sasa_det.backbones.list_backbones`.
        num_classes: classes of the linear head.
        backbone_overrides: extra :func:`sasa_det.backbones.build_classifier` keyword arguments
            (``image_size``, ``norm``, ``frozen_stages``, ``base_width``, ``dropout``, ...).
        backbone_weights: optional file of backbone weights to start from (fine-tuning).
        label_smoothing: cross-entropy label smoothing (0 = off; neither paper states one).
        optimizer: ``"sgd"`` or ``"adamw"`` (:func:`sasa_det.engine.optim.build_optimizer`).
        lr, momentum, weight_decay, betas: optimizer values; the SASA paper's ImageNet recipe is Nesterov
            SGD with a linear warm-up then cosine decay (Sec. 4.1, batch 4096 and lr 1.6, scale to your batch).
        nesterov: Nesterov momentum (SASA Sec. 4.1: yes).
        schedule: ``"cosine"`` | ``"multistep"`` | ``"constant"`` after the warm-up, stepped per optimizer step
            over the trainer's total steps.
        warmup_epochs: linear warm-up length in epochs (SASA Sec. 4.1: 10 of 130 epochs).
        warmup_steps: warm-up length in optimizer steps; overrides ``warmup_epochs`` when given.
        warmup_factor: learning-rate multiplier at the first warm-up step.
        milestones: ``multistep`` milestones as fractions of the total steps in (0, 1).
        gamma: ``multistep`` decay factor.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 1000,
        backbone_overrides: Mapping[str, Any] | None = None,
        backbone_weights: str | None = None,
        label_smoothing: float = 0.0,
        optimizer: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = True,  # SASA Sec. 4.1: Nesterov accelerated gradient
        weight_decay: float = 1e-4,
        betas: Sequence[float] = (0.9, 0.999),
        schedule: str = "cosine",  # SASA Sec. 4.1: cosine decay after the warm-up
        warmup_epochs: float = 0.0,
        warmup_steps: int | None = None,
        warmup_factor: float = 0.001,
        milestones: Sequence[float] = (),
        gamma: float = 0.1,
    ):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if any(not 0.0 < float(m) < 1.0 for m in milestones):
            raise ValueError(f"milestones are fractions of the total steps in (0, 1), got {list(milestones)}")
        overrides = dict(backbone_overrides or {})
        self.save_hyperparameters(
            {
                "backbone": backbone,
                "num_classes": int(num_classes),
                "backbone_overrides": overrides,
                "backbone_weights": backbone_weights,
                "label_smoothing": float(label_smoothing),
                "optimizer": optimizer,
                "lr": float(lr),
                "momentum": float(momentum),
                "nesterov": bool(nesterov),
                "weight_decay": float(weight_decay),
                "betas": [float(b) for b in betas],
                "schedule": schedule,
                "warmup_epochs": float(warmup_epochs),
                "warmup_steps": None if warmup_steps is None else int(warmup_steps),
                "warmup_factor": float(warmup_factor),
                "milestones": [float(m) for m in milestones],
                "gamma": float(gamma),
            }
        )
        self.model = build_classifier(backbone, num_classes=int(num_classes), **overrides)
        if backbone_weights:
            load_backbone_weights(self.model.backbone, backbone_weights)
        self.topk = (1, 5) if num_classes >= 5 else (1,)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images [N, 3, H, W]`` -> logits ``[N, num_classes]``."""
        return self.model(images)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)

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
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        n = labels.shape[0]
        self.log("val/loss", self._loss(logits, labels), batch_size=n, sync_dist=True)
        for k, correct in zip(self.topk, topk_correct(logits, labels, self.topk)):
            self.log(f"val/top{k}", correct.float() / n, prog_bar=k == 1, batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = build_optimizer(
            self.model,
            name=hp.optimizer,
            lr=hp.lr,
            momentum=hp.momentum,
            nesterov=hp.nesterov,
            weight_decay=hp.weight_decay,
            betas=tuple(hp.betas),
        )
        schedule = {key: hp[key] for key in ("warmup_steps", "warmup_epochs", "warmup_factor", "milestones", "gamma")}
        schedule["schedule"] = hp.schedule
        scheduler = build_scheduler(optimizer, **schedule_lengths(schedule, *training_steps(self.trainer)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
