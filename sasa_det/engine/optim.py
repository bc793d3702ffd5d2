"""Optimizers and per-step learning-rate schedules.

Weight-decay rule (shared by every model of the package): parameters with ``ndim <= 1`` (norm scales and
shifts, biases) and parameters whose name contains ``rel_`` (relative position embeddings of the SASA and
AA layers) or ``pos_emb`` (position embeddings of the spatially-aware stem) get no weight decay. Frozen
parameters (``requires_grad=False``) are left out of the optimizer entirely.

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

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "build_optimizer",
    "build_scheduler",
    "lr_multiplier",
    "no_weight_decay",
    "parameter_groups",
    "schedule_lengths",
    "training_steps",
]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "multistep", "constant")

_NO_DECAY_NAME_PARTS = ("rel_", "pos_emb")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Whether ``param`` (called ``name`` in its module) is excluded from weight decay.

    True for tensors with ``ndim <= 1`` (biases, norm weights) and for names containing ``rel_`` or
    ``pos_emb`` (relative / absolute position embeddings of the attention layers).
    """
    if param.ndim <= 1:
        return True
    return any(part in name for part in _NO_DECAY_NAME_PARTS)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split the trainable parameters of ``model`` into a decayed and a non-decayed group.

    Returns a list of at most two optimizer parameter groups, each ``{"params": [...],
    "weight_decay": float, "name": "decay" | "no_decay"}``; empty groups are omitted and frozen
    parameters are skipped.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if no_weight_decay(name, param) else decay).append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": float(weight_decay), "name": "decay"})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return groups


def build_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.01,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 1e-4,
    betas: Sequence[float] = (0.9, 0.999),
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
    groups = parameter_groups(model, weight_decay)
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


def schedule_lengths(optim_cfg: Mapping[str, Any], total_steps: int, steps_per_epoch: int) -> dict[str, Any]:
    """Turn the config's epoch-based warm-up and fractional milestones into optimizer steps.

    Returns ``build_scheduler`` keyword arguments: ``total_steps``, ``warmup_steps`` (``warmup_steps`` if
    set, else ``round(warmup_epochs * steps_per_epoch)``, capped at ``total_steps``), ``milestones``
    (``round(fraction * total_steps)``), ``warmup_factor``, ``gamma`` and ``name``.
    """
    total_steps = max(1, int(total_steps))
    if optim_cfg.get("warmup_steps") is not None:
        warmup = int(optim_cfg["warmup_steps"])
    else:
        warmup = int(round(float(optim_cfg.get("warmup_epochs", 0.0)) * steps_per_epoch))
    milestones = [int(round(float(f) * total_steps)) for f in optim_cfg.get("milestones", ())]
    return {
        "name": optim_cfg["schedule"],
        "total_steps": total_steps,
        "warmup_steps": min(warmup, total_steps),
        "warmup_factor": float(optim_cfg["warmup_factor"]),
        "milestones": milestones,
        "gamma": float(optim_cfg["gamma"]),
    }


def training_steps(trainer: Any) -> tuple[int, int]:
    """``(total optimizer steps of the run, optimizer steps per epoch)`` of a fitted Lightning trainer."""
    total_steps = int(trainer.estimated_stepping_batches)
    accumulate = max(1, int(trainer.accumulate_grad_batches))
    batches = trainer.num_training_batches
    steps_per_epoch = math.ceil(batches / accumulate) if math.isfinite(batches) else total_steps
    return total_steps, steps_per_epoch
