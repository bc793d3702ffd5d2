"""Library entry points behind ``tools/train.py``, ``tools/eval.py`` and ``tools/predict.py``, for any task.

``train(cfg)`` builds the task's data module and LightningModule and fits (resuming when asked);
``evaluate(ckpt)`` rebuilds both from a checkpoint's stored config and validates; ``predict(ckpt, inputs)``
draws a detection checkpoint's detections. What differs between tasks lives in
:mod:`sasa_det.engine.task` and its implementations.

Output directory of a training run (``cfg.output_dir``)::

    config.yaml              the resolved config
    train.log                everything the run logged (rank 0)
    checkpoints/             last.ckpt (every trainer.checkpoint_every_n_steps steps, every epoch end, the
                             final weights) and best-*.ckpt (highest val/mAP, or val/top1 for classification)
    logs/version_0/          CSV metrics (metrics.csv, appended to on resume) and hparams.yaml
    tensorboard/version_0/   TensorBoard events (logging.loggers; also wandb/, mlflow.db: sasa_det.experiment_loggers)
    init_from_report.json    what model.init_from loaded, skipped and missed (when set)
    metrics.json             the final weights' validation metrics
    per_class.md             per-class AP table of the final validation (detection)
    evaluation.json          per-class AP rows and precision/recall curves at IoU 0.5 (detection)
    predictions.png          validation images with the final model's detections (detection)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from sasa_det.config import check_data_paths, config_to_dict, save_config
from sasa_det.engine.callbacks import ValidationRecorder
from sasa_det.engine.checkpointing import (
    AtomicCheckpointIO,
    ExperimentConfigInCheckpoint,
    LastCheckpoint,
    RngStateCheckpoint,
    StopOnSignal,
    TrainingInterrupted,
    remove_partial_checkpoints,
    sigterm_exception,
)
from sasa_det.engine.data_fingerprint import check_training_data, training_set_fingerprint
from sasa_det.engine.ema import ExponentialMovingAverage
from sasa_det.engine.init_from import initialize_from
from sasa_det.engine.loading import clear_initial_weights, load_module
from sasa_det.engine.log_history import CsvHistory
from sasa_det.engine.resume_position import ResumePoint, ResumePosition, read_resume_point
from sasa_det.engine.run_lock import RunLock, is_first_process
from sasa_det.engine.tasks import get_task
from sasa_det.experiment_loggers import build_loggers, log_final_metrics, log_resolved_config
from sasa_det.logging_setup import log_to_file

__all__ = ["build_trainer", "evaluate", "predict", "train"]

logger = logging.getLogger(__name__)


def build_trainer(
    cfg: DictConfig, callbacks: Optional[list[pl.Callback]] = None, loggers: Any = False, **extra: Any
) -> pl.Trainer:
    """A ``pl.Trainer`` from the ``trainer`` and ``optim.grad_clip`` sections (``extra`` overrides arguments).

    Checkpoints are written atomically (:class:`AtomicCheckpointIO`); the data modules shard their loaders
    themselves (``use_distributed_sampler=False``).
    """
    from omegaconf import OmegaConf

    t = cfg.trainer
    kwargs: dict[str, Any] = {
        "default_root_dir": str(cfg.output_dir),
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
        "plugins": [AtomicCheckpointIO()],
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


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def _finish(
    trainer: pl.Trainer,
    module,
    datamodule,
    recorder: ValidationRecorder,
    best: ModelCheckpoint,
    last: LastCheckpoint,
    task,
) -> dict[str, float]:
    """Metrics of the final weights, whose checkpoint is on disk as ``last.ckpt`` (and ``best`` if best).

    Training can end between validations (``max_steps`` mid-epoch, ``check_val_every_n_epoch`` not dividing
    the epochs): then the final weights are validated here, and promoted to the best checkpoint when they
    beat it.
    """
    if last.saved_step != trainer.global_step:  # e.g. resumed from a final checkpoint of another output_dir
        last.save(trainer)
    if recorder.step == trainer.global_step and recorder.metrics is not None:
        return dict(recorder.metrics)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = dict(recorder.metrics or {})
    score = metrics.get(task.monitor)
    if trainer.is_global_zero and score is not None and last.saved_step == trainer.global_step:
        previous = best.best_model_score
        if previous is None or score > float(previous):
            target = Path(best.dirpath) / f"best-epoch{trainer.current_epoch:03d}-step{trainer.global_step:06d}.ckpt"
            shutil.copyfile(last.path, target)
            if best.best_model_path and Path(best.best_model_path).exists() and Path(best.best_model_path) != target:
                Path(best.best_model_path).unlink()
            best.best_model_path, best.best_model_score = str(target), torch.tensor(score)
            logger.info("final weights (%s %.4f) are the best: %s", task.monitor, score, target)
    return metrics


def train(cfg: DictConfig, resume_from: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    """Train the experiment ``cfg`` (from :func:`sasa_det.config.load_config`, or
    :func:`sasa_det.engine.resume.resolve_resume` when continuing a run).

    Args:
        cfg: the experiment config.
        resume_from: a checkpoint of this run to continue from (optimizer, schedule, epoch, step, data
            position and random state continue; ``init_from`` and backbone weights are not applied again).

    Every DDP rank runs this function; files are written by global rank 0.

    Returns:
        ``{"metrics": {name: value} of the final weights, "best_checkpoint", "last_checkpoint", "output_dir",
        "config_path", "predictions_png"}`` (paths as strings or None).

    A resumed run whose checkpoint already reached the run's bound returns the stored final metrics with
    ``"already_finished"`` (a sentence saying so) and trains nothing.

    Raises:
        TrainingInterrupted: SIGINT / SIGTERM / SIGUSR1 stopped training after writing ``last.ckpt``.
        ConfigError: wrong data paths; another training holds ``output_dir`` (:class:`RunLocked`); the
            training set changed since the checkpoint being resumed.
        CheckpointWriteError: a checkpoint could not be written (disk full); the previous one is intact.
    """
    check_data_paths(cfg)
    output_dir = Path(cfg.output_dir)
    # One training per output_dir: global rank 0 holds its lock (the other ranks are that training's).
    with RunLock(output_dir) if is_first_process() else contextlib.nullcontext():
        return _train(cfg, output_dir, resume_from)


def _finished_run(cfg: DictConfig, output_dir: Path, point: ResumePoint) -> Optional[dict[str, Any]]:
    """The result of a run whose checkpoint already reached the run's bound and whose final metrics are
    written (newer than the checkpoint), or None when there is training or evaluation left to do."""
    t = cfg.trainer
    if t.max_steps is not None and t.max_steps > 0 and point.global_step >= t.max_steps:
        where = f"step {point.global_step} of trainer.max_steps={t.max_steps}"
    elif t.max_epochs is not None and t.max_epochs > 0 and point.epochs_done >= t.max_epochs:
        where = f"epoch {point.epochs_done} of trainer.max_epochs={t.max_epochs} (step {point.global_step})"
    else:
        return None
    metrics_file = output_dir / "metrics.json"
    if not metrics_file.is_file() or metrics_file.stat().st_mtime < point.path.stat().st_mtime:
        return None
    best = sorted((output_dir / "checkpoints").glob("best-*.ckpt"))
    last = output_dir / "checkpoints" / "last.ckpt"
    message = (
        f"the run in {output_dir} is finished: {where}; its final metrics are in {metrics_file}. "
        "To train it longer, resume with a larger trainer.max_steps or trainer.max_epochs"
    )
    logger.warning("%s", message)
    predictions = output_dir / "predictions.png"
    return {
        "metrics": json.loads(metrics_file.read_text()),
        "best_checkpoint": str(best[-1]) if best else None,
        "last_checkpoint": str(last) if last.is_file() else None,
        "output_dir": str(output_dir),
        "config_path": str(output_dir / "config.yaml"),
        "predictions_png": str(predictions) if predictions.is_file() else None,
        "already_finished": message,
    }


def _train(cfg: DictConfig, output_dir: Path, resume_from: Optional[str | os.PathLike]) -> dict[str, Any]:
    """:func:`train` inside the run directory's lock."""
    point = read_resume_point(resume_from) if resume_from is not None else None
    if point is not None:
        finished = _finished_run(cfg, output_dir, point)
        if finished is not None:
            return finished
    if is_first_process():
        removed, freed = remove_partial_checkpoints(output_dir / "checkpoints")
        if removed:
            logger.warning(
                "removed %d partial checkpoint file(s) (%.1f MB) left in %s by writes that were killed half way",
                removed,
                freed / 2**20,
                output_dir / "checkpoints",
            )
    task = get_task(cfg.task)
    pl.seed_everything(cfg.trainer.seed, workers=True)
    cfg = task.prepare(cfg)
    datamodule = task.build_datamodule(cfg, train=True)
    cfg = task.complete_config(cfg, datamodule)
    datamodule.setup("fit")  # the training set, to fingerprint (Lightning's own setup call reuses it)
    training_data = training_set_fingerprint(datamodule.train_dataset, cfg.data.get("train_ann"))
    data_change = None
    if point is not None:
        clear_initial_weights(cfg)
        data_change = check_training_data(
            point.training_data, training_data, point.path, allow=bool(cfg.trainer.resume_with_changed_data)
        )
        if data_change is not None:
            logger.warning(
                "THE TRAINING SET CHANGED since the checkpoint (%s). Continuing as "
                "trainer.resume_with_changed_data=true asks: the sample order restarts with the next epoch.",
                data_change,
            )
    class_names = getattr(datamodule, "class_names", None)
    module = task.build_module(cfg, list(class_names) if class_names else None)

    best = ModelCheckpoint(
        dirpath=str(output_dir / "checkpoints"),
        filename="best-epoch{epoch:03d}-step{step:06d}",
        auto_insert_metric_name=False,
        monitor=task.monitor,
        mode="max",
        save_top_k=1,
        save_last=False,
    )
    last = LastCheckpoint(output_dir / "checkpoints", every_n_steps=cfg.trainer.checkpoint_every_n_steps)
    stop = StopOnSignal(last)
    recorder = ValidationRecorder()
    # The EMA update of a step must precede last.ckpt's save at that step (hooks run in list order).
    ema = (
        [ExponentialMovingAverage(cfg.trainer.ema_decay, cfg.trainer.ema_start_step)]
        if cfg.trainer.ema_decay is not None
        else []
    )
    callbacks: list[pl.Callback] = [
        *ema,
        best,
        last,
        stop,
        RngStateCheckpoint(),
        ResumePosition(end_epoch=data_change is not None),
        LearningRateMonitor(logging_interval="step"),
        ExperimentConfigInCheckpoint(config_to_dict(cfg), training_data),
        recorder,
        *task.callbacks(cfg),
    ]
    if point is not None:
        history = CsvHistory(output_dir / "logs" / "version_0" / "metrics.csv", point.global_step)
        if is_first_process():
            history.set_aside()
        callbacks.append(history)
    resume_step = point.global_step if point is not None else None
    loggers = build_loggers(OmegaConf.to_object(cfg.logging), output_dir, resume_step)
    trainer = build_trainer(cfg, callbacks=callbacks, loggers=loggers)
    log_resolved_config(loggers, config_to_dict(cfg))
    config_path = output_dir / "config.yaml"
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        log_to_file(output_dir / "train.log")
        save_config(cfg, config_path)
    section = cfg[task.model_section]
    if section.init_from and resume_from is None:
        network, backbone_prefix = task.network(module)
        initialize_from(
            network, section.init_from, backbone_prefix, report_dir=output_dir if trainer.is_global_zero else None
        )
    if resume_from is not None:
        logger.info("resuming from %s", resume_from)

    try:
        with stop.installed():
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from is not None else None)
    except sigterm_exception():
        raise TrainingInterrupted(
            signal.SIGTERM, last.path if last.saved_step is not None else None, trainer.global_step
        ) from None
    metrics = _finish(trainer, module, datamodule, recorder, best, last, task)
    log_final_metrics(loggers, metrics, trainer.global_step)

    result: dict[str, Any] = {
        "metrics": metrics,
        "best_checkpoint": best.best_model_path or None,
        "last_checkpoint": str(last.path) if last.saved_step is not None else None,
        "output_dir": str(output_dir),
        "config_path": str(config_path),
        "predictions_png": None,
    }
    if trainer.is_global_zero:
        _write_json(output_dir / "metrics.json", metrics)
        result.update(task.write_report(module, datamodule, metrics, cfg, output_dir))
    return result


def evaluate(
    ckpt_path: str | os.PathLike,
    overrides: Optional[Sequence[str]] = None,
    output_dir: Optional[str | os.PathLike] = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on its config's validation set (one validation pass with a Trainer).

    Args:
        ckpt_path: a checkpoint written by :func:`train`.
        overrides: ``key=value`` overrides of the stored config (e.g. ``data.val_ann=...``,
            ``trainer.devices=2``, ``eval.score_threshold=0.01``).
        output_dir: where results go (default: ``eval_<checkpoint name>/`` beside the checkpoint).

    Writes (global rank 0) ``metrics.json`` and the task's evaluation files (detection:
    ``detections_<iou>.json``, ``per_class.md``, ``evaluation.json``, ``coco_summary.txt``). With test-time
    augmentation (``eval.tta``) it validates twice, plain then augmented: ``metrics.json`` and the files are
    the augmented pass's, ``metrics_plain.json`` the plain one's.

    Returns:
        ``{"metrics": {name: value}, "output_dir": path}``, plus ``"plain_metrics"`` with test-time augmentation.
    """
    ckpt_path = Path(ckpt_path)
    module, cfg = load_module(ckpt_path, overrides)
    check_data_paths(cfg, splits=("val",))
    task = get_task(cfg.task)
    cfg = task.prepare(cfg)
    datamodule = task.build_datamodule(cfg, train=False)
    task.attach_evaluation_data(module, datamodule)
    out = Path(output_dir) if output_dir is not None else ckpt_path.resolve().parent / f"eval_{ckpt_path.stem}"

    def validate() -> tuple[dict[str, float], pl.Trainer]:
        recorder = ValidationRecorder()
        callbacks = [recorder, *task.callbacks(cfg)]
        trainer = build_trainer(cfg, callbacks=callbacks, loggers=False, enable_checkpointing=False)
        trainer.validate(module, datamodule=datamodule, verbose=False)
        return dict(recorder.metrics or {}), trainer

    metrics, trainer = validate()
    result: dict[str, Any] = {"metrics": metrics, "output_dir": str(out)}
    if task.use_test_time_augmentation(module, cfg):
        logger.info("evaluating again with test-time augmentation (eval.tta)")
        result["plain_metrics"] = metrics
        result["metrics"], trainer = validate()
    if trainer.is_global_zero:
        _write_json(out / "metrics.json", result["metrics"])
        if "plain_metrics" in result:
            _write_json(out / "metrics_plain.json", result["plain_metrics"])
        task.write_evaluation(module, out, cfg)
    return result


def predict(
    ckpt_path: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    overrides: Optional[Sequence[str]] = None,
    score_threshold: Optional[float] = None,
    device: str = "cpu",
    progress: bool = False,
):
    """Draw a detection checkpoint's predictions on image files, folders or globs.

    Args:
        ckpt_path: a detection checkpoint written by :func:`train`.
        inputs: image files, folders (searched recursively) and glob patterns.
        out_dir: output folder: one PNG per image (relative structure kept), ``detections.json`` (COCO
            results) and ``images.json``.
        overrides: ``key=value`` overrides of the stored config (e.g. ``model.min_size=...``).
        score_threshold: minimum score kept and drawn (default ``eval.draw_threshold``).
        device: torch device to run on.
        progress: show a progress bar.

    Returns:
        A :class:`~sasa_det.engine.prediction_files.PredictionReport` (written PNGs, failed inputs, images
        without detections); unreadable inputs are reported there, not raised.
    """
    from sasa_det.engine.prediction_files import predict_files
    from sasa_det.engine.predictor import Predictor

    predictor = Predictor(ckpt_path, device=device, score_threshold=score_threshold, overrides=overrides)
    return predict_files(predictor, inputs, out_dir, progress=progress)
