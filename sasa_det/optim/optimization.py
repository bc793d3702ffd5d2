"""Optimizers and per-step learning-rate schedules.

Weight-decay rule (shared by every model of the package): parameters with ``ndim <= 1`` (norm scales and
shifts, biases) and the parameters that a sub-module lists in its ``no_weight_decay()`` method (timm's
convention; the SASA and AA layers list their relative position tables, the spatially-aware stem its
position embeddings) get no weight decay. Frozen parameters (``requires_grad=False``) are left out of the
optimizer entirely. With ``backbone_lr_mult`` the backbone's parameters form groups of their own whose
learning rate is scaled.

:class:`OptimSettings` declares every optimizer and schedule setting (it is the ``optim`` section of an
experiment config), and :func:`configure_optimization` turns it into what a LightningModule's
``configure_optimizers`` returns: both modules of the engine use it.

Schedules are a :class:`torch.optim.lr_scheduler.LambdaLR` meant to be stepped once per optimizer step
(Lightning ``interval: "step"``). The multiplier applied to the base learning rate at step ``s`` is::

    warm-up (s < warmup_steps):  warmup_factor + (1 - warmup_factor) * s / warmup_steps
    afterwards, by ``name``:
        cosine     0.5 * (1 + cos(pi * (s - warmup_steps) / (total_steps - warmup_steps)))   -> 0 at total_steps
        multistep  gamma ** (number of milestones <= s)
        constant   1

The SASA paper (Sec. 4.2, COCO) warms the rate up linearly "from 0" over one epoch, then decays it with a
cosine; it does not say whether the cosine spans the whole run or starts after the warm-up. Here the
cosine starts where the warm-up ends, so the peak rate is reached exactly once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from sasa_det.optim.settings import OPTIMIZERS, SCHEDULES, OptimSettings

logger = logging.getLogger(__name__)

__all__ = [
    "build_optimizer",
    "build_scheduler",
    "configure_optimization",
    "lr_multiplier",
    "no_weight_decay_names",
    "parameter_groups",
    "scaled_lr",
    "schedule_lengths",
    "training_steps",
]


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names (as in ``model.named_parameters()``) of the parameters that sub-modules of ``model``
    exclude from weight decay through a ``no_weight_decay()`` method returning their local names."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        declared = getattr(module, "no_weight_decay", None)
        if callable(declared):
            names |= {f"{prefix}.{name}" if prefix else name for name in declared()}
    return names


def parameter_groups(
    model: nn.Module, weight_decay: float, backbone: nn.Module | None = None, backbone_lr_mult: float = 1.0
) -> list[dict]:
    """Split the trainable parameters of ``model`` into optimizer parameter groups.

    Decay rule: see the module docstring. With ``backbone`` (a sub-module of ``model``) and
    ``backbone_lr_mult != 1`` its parameters get groups of their own (``"backbone_decay"``,
    ``"backbone_no_decay"``) with ``"lr_mult": backbone_lr_mult``.

    Returns up to four groups ``{"params": [...], "weight_decay": float, "name": str, "lr_mult": float}``;
    empty groups are omitted and frozen parameters are skipped.
    """
    exempt = no_weight_decay_names(model)
    in_backbone = {id(p) for p in backbone.parameters()} if backbone is not None and backbone_lr_mult != 1.0 else set()
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decays = param.ndim > 1 and name not in exempt
        buckets.setdefault((id(param) in in_backbone, decays), []).append(param)
    groups = []
    for is_backbone in (False, True):
        for decays in (True, False):
            params = buckets.get((is_backbone, decays))
            if params:
                groups.append(
                    {
                        "params": params,
                        "weight_decay": float(weight_decay) if decays else 0.0,
                        "name": ("backbone_" if is_backbone else "") + ("decay" if decays else "no_decay"),
                        "lr_mult": float(backbone_lr_mult) if is_backbone else 1.0,
                    }
                )
    return groups


def build_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.01,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 1e-4,
    betas: Sequence[float] = (0.9, 0.999),
    backbone: nn.Module | None = None,
    backbone_lr_mult: float = 1.0,
) -> torch.optim.Optimizer:
    """Build an SGD (momentum, optional Nesterov) or AdamW optimizer over ``model``'s trainable parameters.

    Args:
        model: the module whose ``requires_grad`` parameters are optimized.
        name: ``"sgd"`` or ``"adamw"``.
        lr: base learning rate (the schedule multiplies it).
        momentum: SGD momentum (ignored by AdamW).
        nesterov: SGD Nesterov momentum (ignored by AdamW); needs ``momentum > 0``.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay for the decayed group; norm, bias and
            position-embedding parameters always get 0 (see :func:`no_weight_decay`).
        betas: AdamW's ``(beta1, beta2)`` (ignored by SGD).
        backbone: the sub-module whose parameters get ``lr * backbone_lr_mult``.
        backbone_lr_mult: learning-rate multiplier of ``backbone``'s parameters.

    Raises:
        ValueError: unknown ``name``, non-positive ``lr``, negative ``weight_decay``, Nesterov without
            momentum, or a model with no trainable parameter.
    """
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got lr={lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    groups = parameter_groups(model, weight_decay, backbone, backbone_lr_mult)
    for group in groups:
        group["lr"] = lr * group["lr_mult"]
    if not groups:
        raise ValueError("the model has no trainable parameter (all have requires_grad=False)")
    if key == "sgd":
        if nesterov and momentum <= 0:
            raise ValueError(f"Nesterov momentum needs momentum > 0, got momentum={momentum}")
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=bool(nesterov))
    beta1, beta2 = (float(b) for b in betas)
    return torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2))


def lr_multiplier(
    step: int,
    name: str,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_factor: float = 0.001,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> float:
    """The factor applied to the base learning rate at optimizer step ``step`` (0-based).

    See the module docstring for the formula. Steps at or beyond ``total_steps`` keep the final value
    (0 for cosine).
    """
    if step < warmup_steps:
        return warmup_factor + (1.0 - warmup_factor) * step / warmup_steps
    if name == "cosine":
        span = total_steps - warmup_steps
        progress = min(1.0, (step - warmup_steps) / span) if span > 0 else 1.0
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "multistep":
        return gamma ** sum(1 for m in milestones if m <= step)
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "cosine",
    total_steps: int = 1,
    warmup_steps: int = 0,
    warmup_factor: float = 0.001,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> LambdaLR:
    """Build a per-step :class:`LambdaLR`: linear warm-up, then cosine / multistep / constant.

    Args:
        optimizer: the optimizer whose groups' ``lr`` are scaled.
        name: ``"cosine"`` (to 0 at ``total_steps``), ``"multistep"`` or ``"constant"``.
        total_steps: number of optimizer steps of the whole run (the cosine's end).
        warmup_steps: length of the linear warm-up in optimizer steps (0 = none).
        warmup_factor: multiplier at step 0 of the warm-up (the SASA paper warms up "from 0"; a small
            positive start keeps the first step useful).
        milestones: optimizer steps at which ``multistep`` multiplies the rate by ``gamma``.
        gamma: ``multistep`` decay factor.

    Raises:
        ValueError: unknown ``name``, ``total_steps < 1``, negative ``warmup_steps``,
            ``warmup_factor`` outside [0, 1], or milestones that are not increasing non-negative steps.
    """
    key = str(name).lower()
    if key not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {list(SCHEDULES)}")
    total_steps = int(total_steps)
    warmup_steps = int(warmup_steps)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= warmup_factor <= 1.0:
        raise ValueError(f"warmup_factor must be in [0, 1], got {warmup_factor}")
    steps = [int(m) for m in milestones]
    if any(m < 0 for m in steps) or steps != sorted(steps):
        raise ValueError(f"milestones must be increasing non-negative step numbers, got {list(milestones)}")

    def factor(step: int) -> float:
        return lr_multiplier(step, key, total_steps, warmup_steps, float(warmup_factor), steps, float(gamma))

    return LambdaLR(optimizer, lr_lambda=factor)


def schedule_lengths(settings: OptimSettings, total_steps: int, steps_per_epoch: int) -> dict[str, Any]:
    """Turn the settings' epoch-based warm-up and fractional milestones into optimizer steps.

    Returns ``build_scheduler`` keyword arguments: ``total_steps``, ``warmup_steps`` (``warmup_steps`` if
    set, else ``round(warmup_epochs * steps_per_epoch)``, capped at ``total_steps``), ``milestones``
    (``round(fraction * total_steps)``), ``warmup_factor``, ``gamma`` and ``name``.
    """
    total_steps = max(1, int(total_steps))
    if settings.warmup_steps is not None:
        warmup = int(settings.warmup_steps)
    else:
        warmup = int(round(float(settings.warmup_epochs) * steps_per_epoch))
    milestones = [int(round(float(f) * total_steps)) for f in settings.milestones]
    return {
        "name": settings.schedule,
        "total_steps": total_steps,
        "warmup_steps": min(warmup, total_steps),
        "warmup_factor": float(settings.warmup_factor),
        "milestones": milestones,
        "gamma": float(settings.gamma),
    }


def _batches_per_epoch(trainer: Any) -> float:
    """Training batches per epoch and device, as Lightning will count them (``limit_train_batches`` applied),
    read from a loader of the attached data module; Lightning's own count when there is none."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None:
        trainer.estimated_stepping_batches  # noqa: B018 (sets up Lightning's loader, which counts them)
        return trainer.num_training_batches
    batches = len(datamodule.train_dataloader())
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        return min(batches, limit)
    return batches if limit is None or float(limit) == 1.0 else int(batches * float(limit))


def training_steps(trainer: Any) -> tuple[int, int]:
    """``(total optimizer steps of the run, optimizer steps per epoch)`` of a fitting Lightning trainer.

    Counted like ``trainer.estimated_stepping_batches`` but from a separate loader of the data module:
    asking Lightning makes it build the training loader before a resumed checkpoint's loop state is
    restored, and that loader then ignores the checkpoint's data position (a mid-epoch resume of a run
    bounded by ``max_epochs`` would restart the epoch's order).
    """
    accumulate = max(1, int(trainer.accumulate_grad_batches))
    batches = _batches_per_epoch(trainer)
    max_steps, max_epochs = int(trainer.max_steps), trainer.max_epochs
    if not math.isfinite(batches) or max_epochs is None or max_epochs == -1:
        if max_steps == -1:
            raise ValueError("an endless run (max_epochs=-1, max_steps=-1) has no schedule length; set one of them")
        return max_steps, (math.ceil(batches / accumulate) if math.isfinite(batches) else max_steps)
    steps_per_epoch = math.ceil(batches / accumulate)
    total_steps = steps_per_epoch * max(int(max_epochs), 1)
    if max_steps != -1:
        total_steps = min(total_steps, max_steps)
    return total_steps, steps_per_epoch


def scaled_lr(settings: OptimSettings, global_batch_size: int) -> float:
    """The learning rate to use: ``lr * global_batch_size / reference_batch_size`` under the linear scaling
    rule (Goyal et al. 2017), or ``lr`` when ``reference_batch_size`` is None."""
    if settings.reference_batch_size is None:
        return float(settings.lr)
    return float(settings.lr) * global_batch_size / settings.reference_batch_size


def configure_optimization(
    model: nn.Module, settings: OptimSettings, trainer: Any, batch_size: int, backbone: nn.Module | None = None
) -> dict[str, Any]:
    """The ``configure_optimizers`` result of a LightningModule: optimizer + per-step schedule.

    Args:
        model: the network whose trainable parameters are optimized.
        settings: optimizer and schedule settings.
        trainer: the fitting Lightning trainer (run length, devices, nodes, accumulation).
        batch_size: images per device and step, for the global batch of the linear scaling rule.
        backbone: sub-module of ``model`` that gets ``settings.backbone_lr_mult``.
    """
    global_batch = int(batch_size) * int(trainer.world_size) * max(1, int(trainer.accumulate_grad_batches))
    lr = scaled_lr(settings, global_batch)
    if settings.reference_batch_size is not None:
        logger.info(
            "linear scaling rule: lr %.6g = %.6g x global batch %d (%d per device x %d devices x %d accumulation) / %d",
            lr,
            settings.lr,
            global_batch,
            batch_size,
            trainer.world_size,
            trainer.accumulate_grad_batches,
            settings.reference_batch_size,
        )
    optimizer = build_optimizer(
        model,
        name=settings.name,
        lr=lr,
        momentum=settings.momentum,
        nesterov=settings.nesterov,
        weight_decay=settings.weight_decay,
        betas=settings.betas,
        backbone=backbone,
        backbone_lr_mult=settings.backbone_lr_mult,
    )
    lengths = schedule_lengths(settings, *training_steps(trainer))
    scheduler = build_scheduler(optimizer, **lengths)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
