"""Experiment trackers by config: a tiny run with csv, tensorboard, wandb (offline) and mlflow (local SQLite store)
logs the resolved config as hyper-parameters and the final COCO metrics to each, with no network; a missing extra
is named; the config refuses unknown trackers and a run without csv."""

from __future__ import annotations

import sys

import pytest
import yaml

from sasa_det.config import ConfigError
from sasa_det.engine.experiment import load_config
from sasa_det.engine.run.loggers import build_loggers
from sasa_det.engine.run.run_directory import RunDirectory
from sasa_det.experiment_loggers import LoggingOptions
from sasa_det.optional_extra import MissingExtra
from tests.helpers import DEMO_CONFIG, tiny_shapes_overrides


def test_all_four_trackers_get_config_and_final_metrics_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # belt and braces: logging.offline=true already says so
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_home"))
    from sasa_det.engine.runner import train

    overrides = tiny_shapes_overrides(tmp_path / "shapes", tmp_path / "run", num_train=4, num_val=2)
    overrides += [
        "trainer.accelerator=cpu",
        "eval.save_visualization=0",
        "logging.loggers=[csv,tensorboard,wandb,mlflow]",
        "logging.offline=true",
        "logging.run_name=tiny",
    ]
    result = train(load_config(DEMO_CONFIG, overrides))
    run = tmp_path / "run"
    final_ap = result["metrics"]["val/bbox/AP"]
    # csv: the resolved config beside the module's hyper-parameters, the final metrics as a row
    hparams = yaml.safe_load((run / "logs" / "version_0" / "hparams.yaml").read_text())
    assert hparams["model"]["backbone"]["stage_ops"] == ["conv", "conv", "sasa", "aa"]
    header = (run / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "final/bbox/AP" in header and "final/mAP" in header
    assert list((run / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
    # wandb: an offline run folder, nothing sent
    assert list((run / "wandb").glob("offline-run-*"))
    # mlflow: the local store has the flattened config and the final metrics
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("sasa_det")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.run_name == "tiny"
    assert mlflow_run.data.params["model/backbone/name"] == "resnet26"
    assert mlflow_run.data.metrics["final/bbox/AP"] == pytest.approx(final_ap)


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_missing_tracker_names_its_extra(tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    with pytest.raises(MissingExtra, match=rf"sasa-det\[{name}\].*uv sync --extra {name}"):
        build_loggers(LoggingOptions(loggers=["csv", name]), RunDirectory(tmp_path))


def test_config_checks_the_trackers():
    with pytest.raises(ConfigError, match="mlflow"):
        load_config(DEMO_CONFIG, ["logging.loggers=[csv,neptune]"])
    with pytest.raises(ConfigError, match="must include csv"):
        load_config(DEMO_CONFIG, ["logging.loggers=[tensorboard]"])
