"""Short names for ``model.init_from`` (and ``classifier.init_from``): the weights a user already has.

* ``demo``: the demo run's best checkpoint (``best-*.ckpt``, else ``last.ckpt``); the demo's folder is the
  ``output_dir`` of its config (read with the config loader; ``tools/train.py`` names the config);
* ``zoo:<row>`` or ``zoo:<row>/seed<k>``: the best checkpoint (else ``last.ckpt``) of the detector zoo's run
  ``<zoo root>/<row>/seed<k>/`` (``seed0`` when not given), the folders ``tools/benchmark.py zoo`` trains.

Anything else is a path and is returned as it is. Names are resolved before any file is checked or written,
so the run's stored config records the checkpoint that was used; a name whose checkpoint is absent is a
:class:`~sasa_det.config.ConfigError` saying what to run or give instead. No torch is imported here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from sasa_det.config import ConfigError, read_raw_config
from sasa_det.engine.run.run_directory import RunDirectory

__all__ = ["DEMO", "ZOO_PREFIX", "ZOO_ROOT", "is_short_name", "resolve_init_source"]

#: ``init_from`` value naming the demo run's checkpoint.
DEMO = "demo"
#: ``init_from`` values ``zoo:<row>[/seed<k>]`` name a run of the detector zoo.
ZOO_PREFIX = "zoo:"
#: Where the detector zoo writes its runs (``<row>/seed<k>/``), relative to the working directory.
ZOO_ROOT = Path("outputs") / "zoo"

_ZOO_NAME = re.compile(r"(?P<row>[^/]+)(?:/seed(?P<seed>\d+))?")


def is_short_name(value: Optional[str]) -> bool:
    """Whether ``value`` is a short name (``demo``, ``zoo:...``) rather than a path."""
    return isinstance(value, str) and (value == DEMO or value.startswith(ZOO_PREFIX))


def _start_checkpoint(run: RunDirectory) -> Optional[Path]:
    """The run's newest best checkpoint, else its ``last.ckpt``, else None."""
    best = run.best_checkpoints()
    if best:
        return best[-1]
    return run.last_checkpoint if run.last_checkpoint.is_file() else None


def _demo_checkpoint(key: str, demo_config: Optional[str | os.PathLike]) -> Path:
    if demo_config is None or not Path(demo_config).is_file():
        raise ConfigError(
            f"{key}=demo: the demo's config is not known here (tools/train.py reads it from the repository); "
            "give the demo's checkpoint path instead"
        )
    run = RunDirectory(read_raw_config(demo_config).output_dir)
    found = _start_checkpoint(run)
    if found is None:
        raise ConfigError(
            f"{key}=demo: no demo checkpoint under {run.checkpoints_dir}; run `make demo` first, or give a "
            "checkpoint path"
        )
    return found


def _zoo_checkpoint(key: str, value: str, zoo_root: Path) -> Path:
    name = value[len(ZOO_PREFIX) :]
    match = _ZOO_NAME.fullmatch(name)
    if match is None:
        raise ConfigError(
            f"{key}={value}: a zoo run is named zoo:<row> or zoo:<row>/seed<k> (e.g. zoo:retinanet_r50/seed1)"
        )
    row, seed = match["row"], int(match["seed"] or 0)
    rows = sorted(p.name for p in zoo_root.iterdir() if p.is_dir()) if zoo_root.is_dir() else []
    if row not in rows:
        found = f"the rows found: {', '.join(rows)}" if rows else "no zoo run was found"
        raise ConfigError(
            f"{key}={value}: no zoo row {row!r} under {zoo_root} ({found}); train it with "
            "`python tools/benchmark.py zoo`, or give a checkpoint path"
        )
    run = RunDirectory(zoo_root / row / f"seed{seed}")
    found = _start_checkpoint(run)
    if found is None:
        seeds = sorted(p.name for p in (zoo_root / row).iterdir() if p.is_dir() and RunDirectory(p).checkpoints())
        raise ConfigError(
            f"{key}={value}: no checkpoint under {run.checkpoints_dir} (seeds of {row} with checkpoints: "
            f"{', '.join(seeds) or 'none'}); give another seed or a checkpoint path"
        )
    return found


def resolve_init_source(
    value: Optional[str],
    key: str = "model.init_from",
    demo_config: Optional[str | os.PathLike] = None,
    zoo_root: str | os.PathLike = ZOO_ROOT,
) -> Optional[str]:
    """The checkpoint path ``value`` names: a short name resolved (see the module docstring), a path as it is.

    Args:
        value: the ``init_from`` value (None passes through).
        key: the config key, for the messages.
        demo_config: the demo's experiment config, whose ``output_dir`` is the demo run.
        zoo_root: the folder of the zoo's runs.

    Raises:
        ConfigError: the named run has no checkpoint (naming what to run, or the zoo rows found).
    """
    if not is_short_name(value):
        return value
    if value == DEMO:
        return str(_demo_checkpoint(key, demo_config))
    return str(_zoo_checkpoint(key, value, Path(zoo_root)))
