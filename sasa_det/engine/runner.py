"""Library entry points behind ``tools/train.py``, ``tools/eval.py`` and ``tools/predict.py``, for any task.

``train(cfg)`` builds the task's data module and LightningModule and fits (resuming when asked);
``evaluate(ckpt)`` rebuilds both from a checkpoint's stored config and validates; ``predict(ckpt, inputs)``
draws a detection checkpoint's detections. This module only assembles: what differs between tasks lives in
:mod:`sasa_det.engine.tasks`, what a run must survive in :mod:`sasa_det.engine.run` (its files are those of
:class:`~sasa_det.engine.run.run_directory.RunDirectory`, which alone replaces or deletes them).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor

from sasa_det.config import config_to_dict, config_yaml
from sasa_det.engine.experiment import without_initial_weights
from sasa_det.engine.run.data_fingerprint import check_training_data, training_set_fingerprint
from sasa_det.engine.run.init_from import initialize_from
from sasa_det.engine.run.init_source import is_short_name, resolve_init_source
from sasa_det.engine.run.loggers import build_loggers, check_trackers, log_final_metrics, log_resolved_config
from sasa_det.engine.run.resume import finished_run
from sasa_det.engine.run.resume_position import ResumePoint, read_resume_point
from sasa_det.engine.run.run_directory import RunDirectory
from sasa_det.engine.run.run_lock import RunLock, is_first_process
from sasa_det.engine.run.signals import (
    SigtermOutsideFit,
    TrainingInterrupted,
    sigterm_exception,
    stop_on_sigterm_outside_fit,
)
from sasa_det.engine.run.survival import SurvivalCallbacks, survival_callbacks
from sasa_det.engine.tasks import get_task
from sasa_det.engine.tasks.callbacks import StepTimer, ValidationRecorder
from sasa_det.engine.tasks.task import Task
from sasa_det.engine.trainer import build_trainer
from sasa_det.logging_setup import log_to_file

__all__ = ["evaluate", "predict", "train"]

logger = logging.getLogger(__name__)


def _finish(
    trainer: pl.Trainer,
    module,
    datamodule,
    recorder: ValidationRecorder,
    survival: SurvivalCallbacks,
    task: Task,
    sigterm: SigtermOutsideFit,
) -> dict[str, float]:
    """Metrics of the final weights, whose checkpoint is on disk as ``last.ckpt`` (and ``best`` if best).

    Training can end between validations (``max_steps`` mid-epoch, ``check_val_every_n_epoch`` not dividing
    the epochs): then the final weights are validated here, and promoted to the best checkpoint when they
    beat it.
    """
    last = survival.last
    if last.saved_step != trainer.global_step:  # e.g. resumed from a final checkpoint of another output_dir
        last.save(trainer)
    sigterm.finished_training(last.written, last.saved_step or 0)
    if recorder.step == trainer.global_step and recorder.metrics is not None:
        return dict(recorder.metrics)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = dict(recorder.metrics or {})
    score = metrics.get(task.monitor)
    if trainer.is_global_zero and score is not None and last.saved_step == trainer.global_step:
        promoted = survival.best.promote(trainer, last.path, score)
        if promoted is not None:
            logger.info("final weights (%s %.4f) are the best: %s", task.monitor, score, promoted)
    return metrics


def train(
    cfg: DictConfig,
    resume_from: Optional[str | os.PathLike] = None,
    demo_config: Optional[str | os.PathLike] = None,
) -> dict[str, Any]:
    """Train the experiment ``cfg`` (from :func:`sasa_det.engine.experiment.load_config`, or
    :func:`sasa_det.engine.run.resume.resolve_resume` when continuing a run).

    Args:
        cfg: the experiment config.
        resume_from: a checkpoint to continue from (optimizer, schedule, epoch, step, data position and random
            state continue; ``init_from`` and backbone weights are not applied again). It is only read: a
            checkpoint of another run leaves that run's files as they were.
        demo_config: the demo's experiment config, for ``init_from: demo``
            (:mod:`~sasa_det.engine.run.init_source`; ``tools/train.py`` gives the repository's).

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
    get_task(cfg.task).check_data_paths(cfg)
    if resume_from is None:
        cfg = _resolve_initial_weights(cfg, demo_config)
        _check_initial_weights(cfg)
    logging_options = check_trackers(OmegaConf.to_object(cfg.logging))
    cfg = copy.deepcopy(cfg)
    cfg.logging.offline = logging_options.offline
    run_dir = RunDirectory(cfg.output_dir)
    # One training per output_dir: global rank 0 holds its lock (the other ranks are that training's).
    with stop_on_sigterm_outside_fit() as sigterm, RunLock(run_dir) if is_first_process() else contextlib.nullcontext():
        return _train(cfg, run_dir, resume_from, sigterm)


def _resolve_initial_weights(cfg: DictConfig, demo_config: Optional[str | os.PathLike]) -> DictConfig:
    """``cfg`` with a short ``init_from`` name (``demo``, ``zoo:<row>[/seed<k>]``) replaced by its checkpoint's
    path, so the run's stored config names the file used."""
    section = get_task(cfg.task).model_section
    value = cfg[section].init_from
    if not is_short_name(value):
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg[section].init_from = resolve_init_source(value, f"{section}.init_from", demo_config)
    logger.info("%s.init_from=%s: %s", section, value, cfg[section].init_from)
    return cfg


def _check_initial_weights(cfg: DictConfig) -> None:
    """The initial-weight files a new run names exist and are weights (not exported models), before anything
    is written."""
    from sasa_det.checkpoint_file import check_weights_file

    section = cfg[get_task(cfg.task).model_section]
    if section.init_from:
        check_weights_file(section.init_from, f"{get_task(cfg.task).model_section}.init_from weights")
    if section.backbone.weights:
        check_weights_file(section.backbone.weights, f"{get_task(cfg.task).model_section}.backbone.weights")


def _prepare_data(task: Task, cfg: DictConfig, run_dir: RunDirectory, point: Optional[ResumePoint]):
    """``(cfg completed from the data, data module set up for fit, training set fingerprint, data change or None)``."""
    cfg = task.prepare(cfg)
    datamodule = task.build_datamodule(cfg, train=True, run_dir=run_dir if is_first_process() else None)
    cfg = task.complete_config(cfg, datamodule)
    datamodule.setup("fit")  # the training set, to fingerprint (Lightning's own setup call reuses it)
    training_data = training_set_fingerprint(datamodule.train_dataset, cfg.data.get("train_ann"))
    data_change = None
    if point is not None:
        data_change = check_training_data(
            point.training_data, training_data, point.path, allow=bool(cfg.trainer.resume_with_changed_data)
        )
        if data_change is not None:
            logger.warning(
                "THE TRAINING SET CHANGED since the checkpoint (%s). Continuing as "
                "trainer.resume_with_changed_data=true asks: the sample order restarts with the next epoch.",
                data_change,
            )
    return cfg, datamodule, training_data, data_change


def _start_files(
    trainer: pl.Trainer, cfg: DictConfig, run_dir: RunDirectory, task: Task, module, resumed: bool
) -> None:
    """The run's log file and resolved config (rank 0), and the initial weights of a new run."""
    if trainer.is_global_zero:
        log_to_file(run_dir.train_log)
        run_dir.write_text(run_dir.config_file, config_yaml(cfg))
    section = cfg[task.model_section]
    if resumed:
        return
    network, backbone_prefix = task.network(module)
    record: dict[str, Any] = {}
    if section.init_from:
        record = asdict(initialize_from(network, section.init_from, backbone_prefix, show=trainer.is_global_zero))
    backbone = network.get_submodule(backbone_prefix.rstrip(".")) if backbone_prefix else network
    if section.backbone.weights and getattr(backbone, "weights_report", None):
        record["backbone_weights"] = backbone.weights_report  # what backbone.weights set, by part
    if record and trainer.is_global_zero:
        run_dir.write_json(run_dir.init_from_report, record)


def _train(
    cfg: DictConfig, run_dir: RunDirectory, resume_from: Optional[str | os.PathLike], sigterm: SigtermOutsideFit
) -> dict[str, Any]:
    """:func:`train` inside the run directory's lock; ``sigterm`` learns when training has finished."""
    point = read_resume_point(resume_from) if resume_from is not None else None
    if point is not None:
        finished = finished_run(cfg, run_dir, point.global_step, point.epochs_done, point.path)
        if finished is not None:
            return finished
    if is_first_process():
        removed, freed = run_dir.remove_partial_checkpoints()
        if removed:
            logger.warning(
                "removed %d partial checkpoint file(s) (%.1f MB) left in %s by writes that were killed half way",
                removed,
                freed / 2**20,
                run_dir.checkpoints_dir,
            )
    task = get_task(cfg.task)
    pl.seed_everything(cfg.trainer.seed, workers=True)
    if point is not None:
        cfg = without_initial_weights(cfg)
    cfg, datamodule, training_data, data_change = _prepare_data(task, cfg, run_dir, point)
    class_names = getattr(datamodule, "class_names", None)
    module = task.build_module(cfg, list(class_names) if class_names else None)
    resume_step = point.global_step if point is not None else None
    survival = survival_callbacks(
        run_dir,
        OmegaConf.to_object(cfg.trainer),
        task.monitor,
        config_to_dict(cfg),
        training_data,
        resume_step=resume_step,
        end_epoch=data_change is not None,
    )
    recorder = ValidationRecorder()
    callbacks = [
        *survival.ordered,
        LearningRateMonitor(logging_interval="step"),
        StepTimer(),
        recorder,
        *task.callbacks(cfg),
    ]
    loggers = build_loggers(OmegaConf.to_object(cfg.logging), run_dir, resume_step)
    trainer = build_trainer(cfg, run_dir, callbacks=callbacks, loggers=loggers)
    log_resolved_config(loggers, config_to_dict(cfg))
    _start_files(trainer, cfg, run_dir, task, module, resumed=point is not None)
    if resume_from is not None:
        logger.info("resuming from %s", resume_from)
    try:
        with survival.stop.installed():
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from is not None else None)
    except sigterm_exception():
        last = survival.last
        raise TrainingInterrupted(signal.SIGTERM, last.written, trainer.global_step) from None
    metrics = _finish(trainer, module, datamodule, recorder, survival, task, sigterm)
    log_final_metrics(loggers, metrics, trainer.global_step)
    result: dict[str, Any] = {
        "metrics": metrics,
        "best_checkpoint": survival.best.best_model_path or None,
        "last_checkpoint": str(survival.last.written) if survival.last.written is not None else None,
        "output_dir": str(run_dir.root),
        "config_path": str(run_dir.config_file),
        "predictions_png": None,
    }
    if trainer.is_global_zero:
        run_dir.write_json(run_dir.metrics_file, metrics)
        result.update(task.write_report(module, datamodule, metrics, cfg, run_dir))
    return result


def evaluate(
    ckpt_path: str | os.PathLike,
    overrides: Optional[Sequence[str]] = None,
    output_dir: Optional[str | os.PathLike] = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on its config's validation set (one validation pass with a Trainer).

    Args:
        ckpt_path: a checkpoint written by :func:`train` (only read).
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
    from sasa_det.engine.inference.loading import load_module

    module, cfg = load_module(ckpt_path, overrides)
    point = read_resume_point(ckpt_path)
    title = f"{Path(ckpt_path).name}: epoch {point.epochs_done}, step {point.global_step}"
    task = get_task(cfg.task)
    task.check_data_paths(cfg, splits=("val",))
    cfg = task.prepare(cfg)
    datamodule = task.build_datamodule(cfg, train=False)
    task.attach_evaluation_data(module, datamodule)
    out = RunDirectory(output_dir if output_dir is not None else RunDirectory.evaluation_dir_for(ckpt_path))

    def validate() -> tuple[dict[str, float], pl.Trainer]:
        recorder = ValidationRecorder()
        callbacks = [recorder, *task.callbacks(cfg, title=title)]
        trainer = build_trainer(cfg, out, callbacks=callbacks, loggers=False, enable_checkpointing=False)
        trainer.validate(module, datamodule=datamodule, verbose=False)
        return dict(recorder.metrics or {}), trainer

    metrics, trainer = validate()
    result: dict[str, Any] = {"metrics": metrics, "output_dir": str(out.root)}
    if task.use_test_time_augmentation(module, cfg):
        logger.info("evaluating again with test-time augmentation (eval.tta)")
        result["plain_metrics"] = metrics
        result["metrics"], trainer = validate()
    if trainer.is_global_zero:
        out.write_json(out.metrics_file, result["metrics"])
        if "plain_metrics" in result:
            out.write_json(out.plain_metrics_file, result["plain_metrics"])
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
        A :class:`~sasa_det.engine.inference.prediction_files.PredictionReport` (written PNGs, failed inputs,
        images without detections); unreadable inputs are reported there, not raised.
    """
    from sasa_det.engine.inference.prediction_files import predict_files
    from sasa_det.engine.inference.predictor import Predictor

    predictor = Predictor(ckpt_path, device=device, score_threshold=score_threshold, overrides=overrides)
    return predict_files(predictor, inputs, out_dir, progress=progress)
