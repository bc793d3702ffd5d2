"""The Lightning trainer of a run: the ``trainer`` section (Lightning's settings and the run options) and
:func:`build_trainer`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from sasa_det.engine.run.options import RunOptions
from sasa_det.engine.run.run_directory import RunDirectory

if TYPE_CHECKING:  # Lightning is imported where the trainer is built, not with the config schema
    import pytorch_lightning as pl
    from omegaconf import DictConfig

__all__ = ["TrainerOptions", "build_trainer"]


@dataclass
class TrainerOptions(RunOptions):
    """``pytorch_lightning.Trainer`` settings, after the run options (:class:`RunOptions`)."""

    #: training epochs
    max_epochs: int = 12
    #: stop after this many optimizer steps (-1 = use max_epochs); also the schedule length when > 0
    max_steps: int = -1
    #: number of devices, list of ids, or "auto"
    devices: Any = "auto"
    #: machines
    num_nodes: int = 1
    #: "auto" | "cpu" | "gpu" | ...
    accelerator: str = "auto"
    #: "auto" | "ddp" | "ddp_spawn" | ...
    strategy: str = "auto"
    #: "32-true" | "16-mixed" | "bf16-mixed" (AMP)
    precision: str = "32-true"
    #: convert BatchNorm to SyncBatchNorm under DDP
    sync_batchnorm: bool = False
    #: logging interval in optimizer steps
    log_every_n_steps: int = 20
    #: validation interval in epochs
    check_val_every_n_epoch: int = 1
    #: int (batches) or float (fraction) per epoch; null = all
    limit_train_batches: Any = None
    #: int (batches) or float (fraction) per validation; null = all
    limit_val_batches: Any = None
    #: torch deterministic algorithms
    deterministic: bool = False
    #: seed for python/numpy/torch and the data loaders
    seed: int = 0
    #: gradient accumulation
    accumulate_grad_batches: int = 1
    #: show a progress bar
    enable_progress_bar: bool = True


def build_trainer(
    cfg: DictConfig,
    run_dir: RunDirectory,
    callbacks: Optional[list[pl.Callback]] = None,
    loggers: Any = False,
    **extra: Any,
) -> pl.Trainer:
    """A ``pl.Trainer`` from the ``trainer`` and ``optim.grad_clip`` sections (``extra`` overrides arguments).

    Checkpoints are written atomically into ``run_dir`` and never outside it
    (:class:`~sasa_det.engine.run.checkpoint_io.AtomicCheckpointIO`); the data modules shard their loaders
    themselves (``use_distributed_sampler=False``).
    """
    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    from sasa_det.engine.run.checkpoint_io import AtomicCheckpointIO

    t = cfg.trainer
    kwargs: dict[str, Any] = {
        "default_root_dir": str(run_dir.root),
        "max_epochs": t.max_epochs,
        "max_steps": t.max_steps,
        "devices": OmegaConf.to_object(t.devices) if OmegaConf.is_list(t.devices) else t.devices,
        "num_nodes": t.num_nodes,
        "accelerator": t.accelerator,
        "strategy": t.strategy,
        "precision": t.precision,
        "sync_batchnorm": t.sync_batchnorm,
        "log_every_n_steps": t.log_every_n_steps,
        "check_val_every_n_epoch": t.check_val_every_n_epoch,
        "deterministic": t.deterministic,
        "accumulate_grad_batches": t.accumulate_grad_batches,
        "enable_progress_bar": t.enable_progress_bar,
        "use_distributed_sampler": False,
        "plugins": [AtomicCheckpointIO(run_dir)],
        "callbacks": callbacks or [],
        "logger": loggers,
    }
    if t.limit_train_batches is not None:
        kwargs["limit_train_batches"] = t.limit_train_batches
    if t.limit_val_batches is not None:
        kwargs["limit_val_batches"] = t.limit_val_batches
    if cfg.optim.grad_clip is not None:
        kwargs["gradient_clip_val"] = float(cfg.optim.grad_clip)
        kwargs["gradient_clip_algorithm"] = "norm"
    kwargs.update(extra)
    return pl.Trainer(**kwargs)
