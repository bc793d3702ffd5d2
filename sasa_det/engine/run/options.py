"""What a training run does to survive: the run options of the ``trainer`` section.

They are read by the survival machinery of :mod:`sasa_det.engine.run` (:func:`survival_callbacks`); the
Lightning trainer's own settings extend them in :class:`sasa_det.engine.trainer.TrainerOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sasa_det.choices import OptionError

__all__ = ["RunOptions", "check_moving_average"]


@dataclass
class RunOptions:
    """Checkpoints, resuming and the weights' moving average of a training run (keys of ``trainer``)."""

    #: write checkpoints/last.ckpt every N optimizer steps (and at every epoch end); 0 = epoch ends only
    checkpoint_every_n_steps: int = 500
    #: resume although the training set changed since the checkpoint (refused otherwise): the interrupted
    #: epoch ends at the checkpoint and the next one starts with the new set's order
    resume_with_changed_data: bool = False
    #: exponential moving average of the weights (e.g. 0.999): validated and saved in checkpoints; null = off
    ema_decay: Optional[float] = None
    #: optimizer steps before the moving average starts
    ema_start_step: int = 0

    def validate(self) -> None:
        """Checkpoint interval >= 0; the moving average's decay in [0, 1) and start >= 0."""
        if self.checkpoint_every_n_steps < 0:
            raise OptionError("checkpoint_every_n_steps", f"{{key}} must be >= 0, got {self.checkpoint_every_n_steps}")
        check_moving_average(self.ema_decay, self.ema_start_step)


def check_moving_average(decay: Optional[float], start_step: int) -> None:
    """The weights' moving average: ``decay`` in [0, 1) (None: off), ``start_step`` >= 0.

    Raises:
        OptionError: naming the option (``{key}`` in its message stands for its config key).
    """
    if decay is not None and not 0.0 <= decay < 1.0:
        raise OptionError("ema_decay", f"{{key}} must be in [0, 1) or null, got {decay}")
    if start_step < 0:
        raise OptionError("ema_start_step", f"{{key}} must be >= 0, got {start_step}")
