"""Where a run continues from: ``--resume``, SLURM requeues, and refusing to overwrite a finished run.

A run directory (``output_dir``) holds one run. ``tools/train.py CONFIG --resume`` continues it from
``checkpoints/last.ckpt`` (``--resume PATH`` from another checkpoint) with the config stored in the
checkpoint; command-line overrides may change how it runs (steps, devices, workers, ...) but not the model.
Starting a run without ``--resume`` in a directory that already holds checkpoints is refused, except for
a requeued SLURM job (``SLURM_RESTART_COUNT`` > 0), which resumes from its newest checkpoint by itself.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from sasa_det.checkpoint_file import read_checkpoint_file
from sasa_det.config import ConfigError, config_from_dict, config_to_dict
from sasa_det.engine.checkpointing import CONFIG_KEY
from sasa_det.engine.run_lock import RunLock, is_first_process

__all__ = ["MODEL_SECTIONS", "checkpoint_config", "config_differences", "resolve_resume", "run_checkpoints"]

logger = logging.getLogger(__name__)

#: Config sections that define the network; a resumed run may not change them.
MODEL_SECTIONS = ("task", "model", "classifier")
#: Keys of those sections that only say where initial weights came from (not part of the network).
_INIT_KEYS = ("model.init_from", "model.backbone.weights", "classifier.init_from", "classifier.backbone.weights")
#: Keys that null means "take from the data": the checkpoint holds the resolved value, and a changed dataset
#: is refused later by the class checks, so null here is no change.
_FROM_DATA_KEYS = ("model.num_classes", "classifier.num_classes")


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


def checkpoint_config(path: str | os.PathLike, overrides: Optional[list[str]] = None) -> tuple[DictConfig, dict]:
    """The experiment config stored in a checkpoint (with ``overrides``), and the checkpoint.

    Raises:
        CheckpointFileError: unreadable file. ValueError: no config inside (not written by ``tools/train.py``).
    """
    checkpoint = read_checkpoint_file(path)
    stored = checkpoint.get(CONFIG_KEY) if isinstance(checkpoint, dict) else None
    if stored is None:
        raise ValueError(
            f"checkpoint {path}: holds no experiment config, so it was not written by tools/train.py; "
            "to start from its weights use model.init_from=PATH (or classifier.init_from) instead"
        )
    return config_from_dict(stored, list(overrides or [])), checkpoint


def run_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints of the run in ``output_dir`` (``checkpoints/*.ckpt`` and Lightning's ``hpc_ckpt_*.ckpt``),
    newest first."""
    root = Path(output_dir)
    found = list((root / "checkpoints").glob("*.ckpt")) + list(root.glob("hpc_ckpt_*.ckpt"))
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def resolve_resume(cfg: DictConfig, overrides: list[str], resume: Optional[str]) -> tuple[DictConfig, Optional[Path]]:
    """Decide how a training command starts: ``(config to train with, checkpoint to resume or None)``.

    Args:
        cfg: the config from the command line (file + overrides).
        overrides: the command-line overrides (re-applied to a resumed run's stored config).
        resume: None (start), ``"last"`` (``checkpoints/last.ckpt`` of ``cfg.output_dir``) or a path.

    Raises:
        ConfigError: another training runs in ``output_dir`` now (``RunLocked``); nothing to resume; the model would change on resume; or ``output_dir`` already holds a run
            and neither ``--resume`` nor a SLURM requeue says to continue it. Each message says what to do.
    """
    output_dir = Path(cfg.output_dir)
    if is_first_process():
        RunLock(output_dir).check()  # a training running there now is the first thing to say
    if resume is None:
        existing = run_checkpoints(output_dir)
        if not existing:
            return cfg, None
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if os.environ.get("SLURM_JOB_ID") and restarts > 0:
            logger.warning("requeued SLURM job (restart %d): resuming from %s", restarts, existing[0])
            resume = str(existing[0])
        else:
            raise ConfigError(
                f"output_dir {output_dir} already holds a run ({existing[0]}). Continue it with --resume, or start a "
                f"new run in another folder (output_dir=...); delete {output_dir} to start over there"
            )
    path = output_dir / "checkpoints" / "last.ckpt" if resume == "last" else Path(resume)
    if not path.is_file():
        raise ConfigError(
            f"--resume: no checkpoint at {path}"
            + (f" (the run in {output_dir} wrote none yet); start it without --resume" if resume == "last" else "")
        )
    original, checkpoint = checkpoint_config(path)
    changed = config_differences(original, cfg)
    if changed:
        listed = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in changed[:8])
        raise ConfigError(
            f"--resume {path}: the model would change ({listed}). A resumed run keeps its model; to start a new "
            f"model from these weights train in a new output_dir with model.init_from={path}"
        )
    stored = config_from_dict(checkpoint[CONFIG_KEY], overrides)
    ignored = [  # data paths filled from data.shapes are derived, not the user's
        k
        for k, _, now in config_differences(stored, cfg, ("data", "optim", "trainer", "eval"))
        if now is not None and not k.startswith("data.shapes.")
    ]
    if ignored:
        logger.warning(
            "resuming with the run's stored config; the config file differs in %s (pass key=value overrides to change them)",
            ", ".join(ignored[:10]),
        )
    stored.output_dir = str(output_dir)
    return stored, path
