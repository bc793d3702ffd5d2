"""The callbacks that make a training run survive faults, from one function in one documented order.

:func:`survival_callbacks` builds them for a run directory; the order is Lightning's call order for each hook,
and it matters:

1. :class:`~sasa_det.engine.run.ema.ExponentialMovingAverage` (``trainer.ema_decay``): its update of a step
   precedes ``last.ckpt``'s save at that step;
2. :class:`~sasa_det.engine.run.checkpoints.BestCheckpoint`: ``best-*.ckpt`` at each validation;
3. :class:`~sasa_det.engine.run.checkpoints.LastCheckpoint`: ``last.ckpt`` every N steps and at epoch ends;
4. :class:`~sasa_det.engine.run.signals.StopOnSignal`: a signal's stop writes ``last.ckpt`` through (3);
5. :class:`~sasa_det.engine.run.rng_state.RngStateCheckpoint`: the generators' state in every checkpoint;
6. :class:`~sasa_det.engine.run.resume_position.ResumePosition`: the loop counters made unambiguous on resume;
7. :class:`~sasa_det.engine.run.checkpoints.ExperimentConfigInCheckpoint`: the config and data fingerprint;
8. :class:`~sasa_det.engine.run.log_history.CsvHistory` (a resumed run): the CSV history continued.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import pytorch_lightning as pl

from sasa_det.engine.run.checkpoints import BestCheckpoint, ExperimentConfigInCheckpoint, LastCheckpoint
from sasa_det.engine.run.ema import ExponentialMovingAverage
from sasa_det.engine.run.log_history import CsvHistory
from sasa_det.engine.run.options import RunOptions
from sasa_det.engine.run.resume_position import ResumePosition
from sasa_det.engine.run.rng_state import RngStateCheckpoint
from sasa_det.engine.run.run_directory import RunDirectory
from sasa_det.engine.run.run_lock import is_first_process
from sasa_det.engine.run.signals import StopOnSignal

__all__ = ["SurvivalCallbacks", "survival_callbacks"]


@dataclass
class SurvivalCallbacks:
    """The survival callbacks of one run: those the runner talks to by name, and all of them in order."""

    best: BestCheckpoint
    last: LastCheckpoint
    stop: StopOnSignal
    #: every callback, in the order of the module docstring
    ordered: list[pl.Callback]


def survival_callbacks(
    run_dir: RunDirectory,
    options: RunOptions,
    monitor: str,
    config: Mapping[str, Any],
    training_data: Optional[Mapping[str, Any]],
    resume_step: Optional[int] = None,
    end_epoch: bool = False,
) -> SurvivalCallbacks:
    """The callbacks of the module docstring for a run in ``run_dir``.

    Args:
        run_dir: the run directory.
        options: the run options (``trainer`` section).
        monitor: the validation metric the best checkpoint maximises.
        config: the resolved experiment config stored in every checkpoint.
        training_data: the training set's fingerprint stored in every checkpoint.
        resume_step: the global step of the checkpoint a run resumes from (None: a new run).
        end_epoch: the training set changed since that checkpoint: its epoch ends there.
    """
    best = BestCheckpoint(run_dir, monitor)
    last = LastCheckpoint(run_dir, every_n_steps=options.checkpoint_every_n_steps)
    stop = StopOnSignal(last)
    ordered: list[pl.Callback] = []
    if options.ema_decay is not None:
        ordered.append(ExponentialMovingAverage(options.ema_decay, options.ema_start_step))
    ordered += [
        best,
        last,
        stop,
        RngStateCheckpoint(),
        ResumePosition(end_epoch=end_epoch),
        ExperimentConfigInCheckpoint(config, training_data),
    ]
    if resume_step is not None:
        history = CsvHistory(run_dir, resume_step)
        if is_first_process():
            history.set_aside()
        ordered.append(history)
    return SurvivalCallbacks(best=best, last=last, stop=stop, ordered=ordered)
