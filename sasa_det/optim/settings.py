"""The optimizer and schedule options: the ``optim`` section of an experiment config (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sasa_det.choices import OptionError, choice

__all__ = ["OPTIMIZERS", "SCHEDULES", "OptimSettings"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "multistep", "constant")


@dataclass
class OptimSettings:
    """Optimizer and per-step learning-rate schedule: the ``optim`` section of an experiment config.

    The fields are what :func:`configure_optimization` reads (see :func:`build_optimizer`,
    :func:`build_scheduler` and :func:`schedule_lengths` for their meanings).
    """

    #: "sgd" | "adamw"
    name: str = choice(OPTIMIZERS, default="sgd")
    #: peak learning rate (for reference_batch_size images per step when that is set)
    lr: float = 0.01
    #: linear scaling rule: lr *= global batch / this (global = devices x nodes x batch x accumulation);
    #: null = lr as given
    reference_batch_size: Optional[int] = None
    #: learning-rate multiplier of the backbone's parameters (e.g. 0.1 when fine-tuning)
    backbone_lr_mult: float = 1.0
    #: SGD momentum
    momentum: float = 0.9
    #: SGD Nesterov momentum
    nesterov: bool = False
    #: not applied to norms, biases and position embeddings
    weight_decay: float = 1e-4
    #: AdamW betas
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    #: "cosine" (to 0 at the end) | "multistep" | "constant", after the warm-up
    schedule: str = choice(SCHEDULES, default="cosine")
    #: linear warm-up length in epochs (may be fractional)
    warmup_epochs: float = 0.0
    #: linear warm-up length in optimizer steps; overrides warmup_epochs when set
    warmup_steps: Optional[int] = None
    #: learning-rate multiplier at the first warm-up step
    warmup_factor: float = 0.001
    #: multistep: FRACTIONS of the total steps in (0, 1), e.g. [0.667, 0.889]
    milestones: list[float] = field(default_factory=list)
    #: multistep decay factor
    gamma: float = 0.1
    #: clip the global gradient norm to this value (the trainer does); null = no clipping
    grad_clip: Optional[float] = None

    def validate(self) -> None:
        """Ranges of the schedule and the learning-rate scaling (:class:`~sasa_det.choices.OptionError`)."""
        if any(not 0.0 < float(frac) < 1.0 for frac in self.milestones):
            raise OptionError(
                "milestones",
                f"{{key}}={list(self.milestones)}: milestones are fractions of the total training steps and must "
                "lie in (0, 1), e.g. [0.667, 0.889]",
            )
        if self.warmup_epochs < 0:
            raise OptionError("warmup_epochs", f"{{key}} must be >= 0, got {self.warmup_epochs}")
        if not self.backbone_lr_mult > 0:
            raise OptionError(
                "backbone_lr_mult",
                f"{{key}} must be > 0 (freeze with model.backbone.frozen_stages), got {self.backbone_lr_mult}",
            )
        if self.reference_batch_size is not None and self.reference_batch_size < 1:
            raise OptionError("reference_batch_size", f"{{key}} must be >= 1 or null, got {self.reference_batch_size}")
