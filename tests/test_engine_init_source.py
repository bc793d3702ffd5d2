"""``model.init_from`` short names: ``demo`` and ``zoo:<row>[/seed<k>]`` name a run's best checkpoint (else its
last), resolved before the weights file is checked; an absent run is a clear error naming what to do."""

import shutil
from pathlib import Path

import pytest

from sasa_det.config import ConfigError
from sasa_det.engine.run.init_source import resolve_init_source
from sasa_det.engine.run.run_directory import RunDirectory
from tests.helpers import DEMO_CONFIG

FIXTURE = Path(__file__).parent / "fixtures" / "retinanet_tiny_1136a2c.ckpt"


def _fake_run(root: Path, best: bool = True) -> Path:
    """A run folder holding the fixture checkpoint as its last and (``best``) best checkpoint."""
    run = RunDirectory(root)
    run.checkpoints_dir.mkdir(parents=True)
    shutil.copy(FIXTURE, run.last_checkpoint)
    if not best:
        return run.last_checkpoint
    shutil.copy(FIXTURE, run.best_checkpoint(1, 10))
    shutil.copy(FIXTURE, run.best_checkpoint(3, 30))
    return run.best_checkpoint(3, 30)


def test_demo_names_the_demo_runs_best_checkpoint_else_its_last(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        resolve_init_source("demo", demo_config=DEMO_CONFIG)
    assert str(error.value) == (
        "model.init_from=demo: no demo checkpoint under outputs/shapes_demo/checkpoints; run `make demo` first, "
        "or give a checkpoint path"
    )
    last = _fake_run(tmp_path / "outputs" / "shapes_demo", best=False)
    assert Path(resolve_init_source("demo", demo_config=DEMO_CONFIG)) == Path(
        "outputs/shapes_demo/checkpoints/last.ckpt"
    )
    assert last.is_file()
    shutil.rmtree(tmp_path / "outputs")
    best = _fake_run(tmp_path / "outputs" / "shapes_demo")
    assert Path(resolve_init_source("demo", demo_config=DEMO_CONFIG)).resolve() == best.resolve()
    assert best.name == "best-epoch003-step000030.ckpt"  # the newest best of the two
    with pytest.raises(ConfigError, match="the demo's config is not known here"):
        resolve_init_source("demo")


def test_demo_folder_is_the_demo_configs_output_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text(f"_base_: {DEMO_CONFIG}\noutput_dir: elsewhere/demo\n")
    best = _fake_run(tmp_path / "elsewhere" / "demo")
    assert Path(resolve_init_source("demo", demo_config=tmp_path / "demo.yaml")).resolve() == best.resolve()


def test_zoo_names_a_rows_seed_and_lists_the_rows_when_absent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError, match=r"model.init_from=zoo:retina_r26: no zoo row 'retina_r26' under outputs/zoo \(no zoo run"
    ):
        resolve_init_source("zoo:retina_r26")
    seed0 = _fake_run(tmp_path / "outputs" / "zoo" / "retina_r26" / "seed0")
    seed2 = _fake_run(tmp_path / "outputs" / "zoo" / "retina_r26" / "seed2", best=False)
    _fake_run(tmp_path / "outputs" / "zoo" / "faster_r26" / "seed0")
    assert Path(resolve_init_source("zoo:retina_r26")).resolve() == seed0.resolve()
    assert Path(resolve_init_source("zoo:retina_r26/seed2")).resolve() == seed2.resolve()
    with pytest.raises(ConfigError, match=r"no zoo row 'mask_r26' .*the rows found: faster_r26, retina_r26"):
        resolve_init_source("zoo:mask_r26")
    with pytest.raises(
        ConfigError, match=r"zoo:retina_r26/seed1: no checkpoint .*seeds of retina_r26 with checkpoints: seed0, seed2"
    ):
        resolve_init_source("zoo:retina_r26/seed1")
    with pytest.raises(ConfigError, match=r"zoo:<row> or zoo:<row>/seed<k>"):
        resolve_init_source("zoo:retina_r26/first")
    assert resolve_init_source("runs/x.ckpt") == "runs/x.ckpt" and resolve_init_source(None) is None


def test_train_resolves_the_short_name_before_checking_the_file(tmp_path, monkeypatch):
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.runner import _check_initial_weights, _resolve_initial_weights, train

    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(DEMO_CONFIG), [f"output_dir={tmp_path / 'new'}", "model.init_from=demo"])
    with pytest.raises(ConfigError, match="no demo checkpoint under outputs/shapes_demo/checkpoints"):
        train(cfg, demo_config=DEMO_CONFIG)
    assert not (tmp_path / "new").exists()  # refused before anything was written
    best = _fake_run(tmp_path / "outputs" / "shapes_demo")
    resolved = _resolve_initial_weights(cfg, DEMO_CONFIG)
    assert Path(resolved.model.init_from).resolve() == best.resolve() and cfg.model.init_from == "demo"
    _check_initial_weights(resolved)  # the file passes the weights check


def test_the_train_tool_knows_the_demo_config():
    import tools.train

    assert tools.train.DEMO_CONFIG.resolve() == Path(DEMO_CONFIG).resolve() and tools.train.DEMO_CONFIG.is_file()


def test_a_run_started_from_demo_records_the_file_and_what_it_set_by_part(tmp_path, monkeypatch, capsys):
    """A tiny training with ``model.init_from=demo`` (the demo run holding a backbone state dict) and the same
    file as ``model.backbone.weights``: the stored config names the file, the report holds both, by part; the
    predictions picture draws the validation image beside its ground truth."""
    import json

    import torch
    from omegaconf import OmegaConf

    from sasa_det.backbones import ResNetOptions
    from sasa_det.backbones.presets import backbone_from_options
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.runner import train
    from tests.helpers import tiny_shapes_overrides

    monkeypatch.chdir(tmp_path)
    demo = RunDirectory(tmp_path / "outputs" / "shapes_demo")
    demo.checkpoints_dir.mkdir(parents=True)
    options = ResNetOptions(name="resnet26", base_width=8, stage_ops=("conv", "conv", "sasa", "aa"), image_size=64)
    torch.save(backbone_from_options(options).state_dict(), demo.last_checkpoint)
    overrides = tiny_shapes_overrides(tmp_path / "shapes", tmp_path / "run", num_train=4, num_val=2)
    overrides += ["model.init_from=demo", f"model.backbone.weights={demo.last_checkpoint}"]
    result = train(load_config(str(DEMO_CONFIG), overrides), demo_config=DEMO_CONFIG)
    run = RunDirectory(result["output_dir"])
    stored = OmegaConf.load(run.config_file)
    assert Path(stored.model.init_from).resolve() == demo.last_checkpoint.resolve()
    report = json.loads(run.init_from_report.read_text())
    assert report["placement"].startswith("backbone")
    lines = [part["line"] for part in report["parts"]]
    assert lines[:3] == ["stem: loaded 5/5", "stage1: loaded 20/20", "stage2: loaded 35/35"]  # 1 and 2 blocks
    assert any(line.startswith("stage3 attention layers: loaded ") for line in lines)  # the file has them
    assert any(line.startswith("head.classification_head: loaded 0/") for line in lines)
    backbone_lines = [part["line"] for part in report["backbone_weights"]["parts"]]
    assert backbone_lines[:2] == ["stem: loaded 5/5", "stage1: loaded 20/20"]
    shown = capsys.readouterr().out
    assert "model.init_from weights" in shown and "backbone weights" in shown
    from PIL import Image

    drawn = Image.open(result["predictions_png"])  # one 64-px validation image, enlarged 8x, beside its ground truth
    assert drawn.size == (2 * 512, 512)  # a grid of one image has no border
