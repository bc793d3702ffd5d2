"""Where a run continues from: ``--resume``, SLURM requeues, finished runs, and refusing to overwrite a run.

A run directory (``output_dir``) holds one run. ``tools/train.py --resume OUTPUT_DIR`` continues it from its
``checkpoints/last.ckpt`` with the config stored in that checkpoint (no config file needed);
``tools/train.py CONFIG --resume`` does the same for the config's ``output_dir``, and ``--resume CKPT`` starts
from any checkpoint (of this run or another: the other run's files are only read). Command-line overrides
may change how the run goes on (steps, devices, workers, ...) but not the model. Starting a run without
``--resume`` in a directory that already holds checkpoints is refused, except for a requeued SLURM job
(``SLURM_RESTART_COUNT`` > 0), which resumes from its newest checkpoint by itself.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from sasa_det.config import ConfigError, config_to_dict
from sasa_det.engine.run.run_directory import RunDirectory
from sasa_det.engine.run.run_lock import RunLock, is_first_process

__all__ = [
    "MODEL_SECTIONS",
    "StoredConfig",
    "config_differences",
    "finished_run",
    "read_stored_config",
    "resolve_resume",
]

logger = logging.getLogger(__name__)

#: Config sections that define the network; a resumed run may not change them.
MODEL_SECTIONS = ("task", "model", "classifier")
#: Keys of those sections that only say where initial weights came from (not part of the network).
_INIT_KEYS = ("model.init_from", "model.backbone.weights", "classifier.init_from", "classifier.backbone.weights")
#: Keys that null means "take from the data": the checkpoint holds the resolved value, and a changed dataset
#: is refused later by the class checks, so null here is no change.
_FROM_DATA_KEYS = ("model.num_classes", "classifier.num_classes")

#: Rebuilds an experiment config from a stored dict and overrides (``sasa_det.engine.experiment.config_from_dict``).
StoredConfig = Callable[[dict, list[str]], DictConfig]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def config_differences(
    a: DictConfig, b: DictConfig, sections: tuple[str, ...] = MODEL_SECTIONS
) -> list[tuple[str, Any, Any]]:
    """``(key, value in a, value in b)`` for every leaf of ``sections`` that differs (init-weight keys excluded,
    and a null class count, which the data resolves, equals any)."""
    flat_a = {k: v for k, v in _flatten(config_to_dict(a)).items() if k.split(".")[0] in sections}
    flat_b = {k: v for k, v in _flatten(config_to_dict(b)).items() if k.split(".")[0] in sections}
    keys = sorted(set(flat_a) | set(flat_b))
    return [
        (k, flat_a.get(k), flat_b.get(k))
        for k in keys
        if k not in _INIT_KEYS
        and flat_a.get(k) != flat_b.get(k)
        and not (k in _FROM_DATA_KEYS and None in (flat_a.get(k), flat_b.get(k)))
    ]


def read_stored_config(path: str | os.PathLike) -> tuple[dict, dict]:
    """The experiment config stored in a checkpoint (a plain dict) and the checkpoint.

    Raises:
        CheckpointFileError: unreadable file. ValueError: no config inside (not written by ``tools/train.py``).
    """
    from sasa_det.checkpoint_file import CheckpointFileError, read_checkpoint_file
    from sasa_det.engine.run.checkpoints import CONFIG_KEY

    checkpoint = read_checkpoint_file(path)
    stored = checkpoint.get(CONFIG_KEY) if isinstance(checkpoint, dict) else None
    if stored is None:
        raise CheckpointFileError(
            f"checkpoint {path}: holds no experiment config, so it was not written by tools/train.py; "
            "to start from its weights use model.init_from=PATH (or classifier.init_from) instead"
        )
    return stored, checkpoint


def _refuse_existing_run(run_dir: RunDirectory) -> Optional[Path]:
    """The checkpoint a requeued SLURM job resumes from, None for a fresh directory; else ConfigError."""
    existing = run_dir.checkpoints()
    if not existing:
        return None
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    if os.environ.get("SLURM_JOB_ID") and restarts > 0:
        logger.warning("requeued SLURM job (restart %d): resuming from %s", restarts, existing[0])
        return existing[0]
    raise ConfigError(
        f"output_dir {run_dir.root} already holds a run ({existing[0]}). Continue it with --resume {run_dir.root}, "
        f"or start a new run in another folder (output_dir=...); delete {run_dir.root} to start over there"
    )


def _checkpoint_to_resume(run_dir: RunDirectory, resume: str) -> Path:
    """The file ``--resume`` names: a checkpoint, or a run directory's ``last.ckpt`` (``"last"``: the config's)."""
    if resume != "last" and not Path(resume).is_dir():
        path = Path(resume)
        if not path.is_file():
            raise ConfigError(f"--resume: no checkpoint at {path}")
        return path
    if run_dir.last_checkpoint.is_file():
        return run_dir.last_checkpoint
    others = run_dir.checkpoints()
    if others:
        return others[0]
    raise ConfigError(
        f"--resume: no checkpoint at {run_dir.last_checkpoint} (the run in {run_dir.root} wrote none yet); "
        "start it without --resume"
    )


def resolve_resume(
    cfg: Optional[DictConfig], overrides: list[str], resume: Optional[str], stored_config: StoredConfig
) -> tuple[DictConfig, Optional[Path]]:
    """Decide how a training command starts: ``(config to train with, checkpoint to resume or None)``.

    Args:
        cfg: the config from the command line (file + overrides); None when only ``--resume DIR`` is given.
        overrides: the command-line overrides (re-applied to a resumed run's stored config).
        resume: None (start), ``"last"`` (``checkpoints/last.ckpt`` of ``cfg.output_dir``), a run directory
            (its ``last.ckpt``; the run's own config) or a checkpoint path.
        stored_config: rebuilds a stored config with overrides.

    Raises:
        ConfigError: another training runs in the directory now (``RunLocked``); nothing to resume; the model
            would change on resume; or ``output_dir`` already holds a run and neither ``--resume`` nor a SLURM
            requeue says to continue it. Each message says what to do.
    """
    from_folder = resume is not None and resume != "last" and Path(resume).is_dir()
    if cfg is None and not from_folder:
        raise ConfigError("give a config file, or --resume OUTPUT_DIR to continue the run in that folder")
    run_dir = RunDirectory(resume if from_folder else cfg.output_dir)
    if is_first_process():
        RunLock(run_dir).check()  # a training running there now is the first thing to say
    if resume is None:
        requeued = _refuse_existing_run(run_dir)
        if requeued is None:
            return cfg, None
        resume = str(requeued)
    path = _checkpoint_to_resume(run_dir, resume)
    stored_dict, _ = read_stored_config(path)
    stored = stored_config(stored_dict, overrides)
    if cfg is not None:
        changed = config_differences(stored_config(stored_dict, []), cfg)
        if changed:
            listed = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in changed[:8])
            raise ConfigError(
                f"--resume {path}: the model would change ({listed}). A resumed run keeps its model; to start a "
                f"new model from these weights train in a new output_dir with model.init_from={path}"
            )
        ignored = [  # data paths filled from data.shapes are derived, not the user's
            k
            for k, _, now in config_differences(stored, cfg, ("data", "optim", "trainer", "eval"))
            if now is not None and not k.startswith("data.shapes.")
        ]
        if ignored:
            logger.warning(
                "resuming with the run's stored config; the config file differs in %s (pass key=value overrides to "
                "change them)",
                ", ".join(ignored[:10]),
            )
    stored.output_dir = str(run_dir.root)
    return stored, path


def finished_run(cfg: DictConfig, run_dir: RunDirectory, global_step: int, epochs_done: int, checkpoint: Path):
    """The result of a run whose checkpoint already reached the run's bound and whose final metrics are
    written (newer than the checkpoint), or None when there is training or evaluation left to do."""
    t = cfg.trainer
    if t.max_steps is not None and t.max_steps > 0 and global_step >= t.max_steps:
        where = f"step {global_step} of trainer.max_steps={t.max_steps}"
    elif t.max_epochs is not None and t.max_epochs > 0 and epochs_done >= t.max_epochs:
        where = f"epoch {epochs_done} of trainer.max_epochs={t.max_epochs} (step {global_step})"
    else:
        return None
    metrics_file = run_dir.metrics_file
    if not metrics_file.is_file() or metrics_file.stat().st_mtime < checkpoint.stat().st_mtime:
        return None
    best = run_dir.best_checkpoints()
    message = (
        f"the run in {run_dir.root} is finished: {where}; its final metrics are in {metrics_file}. "
        "To train it longer, resume with a larger trainer.max_steps or trainer.max_epochs"
    )
    logger.warning("%s", message)
    return {
        "metrics": json.loads(metrics_file.read_text()),
        "best_checkpoint": str(best[-1]) if best else None,
        "last_checkpoint": str(run_dir.last_checkpoint) if run_dir.last_checkpoint.is_file() else None,
        "output_dir": str(run_dir.root),
        "config_path": str(run_dir.config_file),
        "predictions_png": str(run_dir.predictions_png) if run_dir.predictions_png.is_file() else None,
        "already_finished": message,
    }
