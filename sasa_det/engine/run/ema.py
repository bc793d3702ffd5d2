"""Exponential moving average (EMA) of the weights during training, on Lightning's ``WeightAveraging``.

With ``trainer.ema_decay`` set (e.g. 0.999), after every optimizer step from ``trainer.ema_start_step`` on,
``ema = decay * ema + (1 - decay) * weights`` for every parameter and buffer (BatchNorm statistics
included), with ``torch.optim.swa_utils.get_ema_multi_avg_fn`` (one fused update over all tensors).

What users see:

- validation during training scores the EMA weights (the raw weights are swapped back afterwards), so
  ``val/*`` metrics, the best checkpoint's choice and ``metrics.json`` are the EMA model's;
- every checkpoint's ``state_dict`` holds the EMA weights, so ``tools/eval.py``, ``tools/predict.py``,
  ``Predictor`` and ``model.init_from`` use them with nothing to set; the raw weights are kept in
  ``current_model_state`` and the averaging state (number of updates) in ``averaging_state``;
- ``--resume`` restores the raw weights, the EMA weights and the update count, so a resumed run continues
  exactly as the uninterrupted one;
- after training the module holds the EMA weights.

Cost: one extra copy of the model's parameters and buffers (on the model's device) and one fused
multiply-add over them per step; validation swaps the two copies twice.
"""

from __future__ import annotations

from typing import Optional

from pytorch_lightning.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

from sasa_det.engine.run.options import check_moving_average

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage(WeightAveraging):
    """EMA of the LightningModule's parameters and buffers, updated after every optimizer step.

    Args:
        decay: weight of the running average per update, in [0, 1) (0.999 averages over ~1000 steps).
        start_step: optimizer steps taken before the first update (the average starts as a copy of the
            weights at that point).
    """

    def __init__(self, decay: float, start_step: int = 0):
        check_moving_average(decay, start_step)
        super().__init__(multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.decay = float(decay)
        self.start_step = int(start_step)

    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        """After every optimizer step (zero-based ``step_idx``) from ``start_step`` on; never at epoch ends."""
        return step_idx is not None and step_idx >= self.start_step
