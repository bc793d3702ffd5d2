"""Training engine: tasks and their builders, LightningModules, checkpointing, train/evaluate/predict.

Import what you need from the submodules (``sasa_det.engine.runner``, ``.tasks``, ...): this package imports
nothing by itself, so that ``import sasa_det.engine.predictor`` (``sasa_det.Predictor``) loads only what it uses.
"""
