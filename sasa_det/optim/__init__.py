"""Optimizers and learning-rate schedules the LightningModules configure (:mod:`.optimization`), and their
options (:mod:`.settings`: ``OptimSettings``, the ``optim`` section, which loads without torch).

The names below are imported from their modules on first use.
"""

from sasa_det.lazy_names import lazy_names

_HOME = {
    "OPTIMIZERS": "settings",
    "OptimSettings": "settings",
    "SCHEDULES": "settings",
    "build_optimizer": "optimization",
    "build_scheduler": "optimization",
    "configure_optimization": "optimization",
    "lr_multiplier": "optimization",
    "no_weight_decay_names": "optimization",
    "parameter_groups": "optimization",
    "scaled_lr": "optimization",
    "schedule_lengths": "optimization",
    "training_steps": "optimization",
}

__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_names(__name__, _HOME, globals())
