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
"""

from sasa_det.lazy_names import lazy_names

_PROVIDED_BY = {
    "runner": "train evaluate predict",
    "experiment": "load_config config_from_dict",
    "inference.predictor": "Predictor",
    "inference.loading": "load_module",
    "run.run_directory": "RunDirectory",
}
__all__, __getattr__, __dir__ = lazy_names(__name__, globals(), _PROVIDED_BY)
