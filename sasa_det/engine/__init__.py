"""Training engine, in wings by job.

* :mod:`sasa_det.engine.run` -- what a run must survive: its directory's owner (``RunDirectory``), checkpoint
  I/O, signals, random state, resume and resume position, the lock, the data fingerprint, the log history,
  the weights' moving average, ``init_from``, and their options.
* :mod:`sasa_det.engine.trainer` -- the Lightning trainer and the ``trainer`` section.
* :mod:`sasa_det.engine.tasks` -- one task object per task (detection, classification) with its
  LightningModule, builders and option sections.
* :mod:`sasa_det.engine.experiment` -- the experiment schema (the sections' owners composed) and its loader.
* :mod:`sasa_det.engine.inference` -- the predictor, prediction files, video, export.
* :mod:`sasa_det.engine.runner` -- ``train`` / ``evaluate`` / ``predict``, which only assemble the wings.

The names below are imported from their modules on first use, so ``import sasa_det.engine`` loads nothing.
"""

from sasa_det.lazy_names import lazy_names

_HOME = {
    "train": "runner",
    "evaluate": "runner",
    "predict": "runner",
    "load_config": "experiment",
    "config_from_dict": "experiment",
    "Predictor": "inference.predictor",
    "load_module": "inference.loading",
    "RunDirectory": "run.run_directory",
}

__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_names(__name__, _HOME, globals())
