"""Optimizers and learning-rate schedules the LightningModules configure (:mod:`.optimization`), and their
options (:mod:`.settings`: ``OptimSettings``, the ``optim`` section, which loads without torch).
"""

from sasa_det.lazy_names import lazy_names

_PROVIDED_BY = {
    "settings": "OPTIMIZERS OptimSettings SCHEDULES",
    "optimization": "build_optimizer build_scheduler configure_optimization lr_multiplier no_weight_decay_names parameter_groups scaled_lr schedule_lengths training_steps",
}
__all__, __getattr__, __dir__ = lazy_names(__name__, globals(), _PROVIDED_BY)
