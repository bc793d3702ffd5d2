"""Checkpoints written before the engine was split into wings (and the config schema typed per task) still
load, resume and evaluate: ``tests/fixtures/retinanet_tiny_1136a2c.ckpt`` was written by that code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "retinanet_tiny_1136a2c.ckpt"


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory) -> list[str]:
    """The checkpoint's shapes set, made again (the generator is deterministic by its settings)."""
    from sasa_det.data import make_shapes_dataset

    paths = make_shapes_dataset(tmp_path_factory.mktemp("old") / "shapes", num_train=4, num_val=2, image_size=64)
    return [f"data.{key}={value}" for key, value in paths.items()]


def test_an_old_checkpoint_loads_and_evaluates(data_overrides, tmp_path):
    from sasa_det.engine.inference.loading import load_module
    from sasa_det.engine.runner import evaluate

    module, cfg = load_module(FIXTURE, data_overrides)
    assert cfg.task == "detection" and "classifier" not in cfg  # the old config's other-task sections left out
    assert module.class_names == ["circle", "square", "triangle"]
    evaluated = evaluate(FIXTURE, [*data_overrides, "trainer.enable_progress_bar=false"], output_dir=tmp_path / "eval")
    assert 0.0 <= evaluated["metrics"]["val/mAP"] <= 1.0 and evaluated["metrics"]["val/num_images"] == 2
    assert (tmp_path / "eval" / "metrics.json").is_file() and (tmp_path / "eval" / "per_class.md").is_file()


def test_an_old_checkpoint_resumes_in_its_run_directory(data_overrides, tmp_path):
    from sasa_det.engine.experiment import config_from_dict
    from sasa_det.engine.run.resume import resolve_resume
    from sasa_det.engine.runner import train

    run = tmp_path / "old_run"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = run / "checkpoints" / "last.ckpt"
    shutil.copyfile(FIXTURE, checkpoint)
    overrides = [*data_overrides, "trainer.max_steps=4", "trainer.accelerator=cpu"]
    cfg, resume_from = resolve_resume(None, overrides, str(run), config_from_dict)
    assert resume_from == checkpoint and cfg.output_dir == str(run)
    result = train(cfg, resume_from=resume_from)
    resumed = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert int(resumed["global_step"]) == 4
    assert Path(result["best_checkpoint"]).parent == run / "checkpoints"
