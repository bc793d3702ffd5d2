"""Training engine: tasks, LightningModules, optimizers and schedules, checkpointing, train/evaluate/predict.

Import what you need from the submodules (``sasa_det.engine.runner``, ``.optim``, ...): this package
imports nothing heavy by itself, so that ``sasa_det.config`` can look up choices without loading models.
"""
