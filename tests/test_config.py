"""Config schema, ``_base_`` inheritance, command-line overrides and error reporting."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sasa_det.config import ConfigError, config_to_dict, save_config
from sasa_det.engine.experiment import config_from_dict, load_config

REPO = Path(__file__).resolve().parents[1]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_file():
    cfg = load_config()
    assert cfg.task == "detection"
    assert cfg.model.arch == "retinanet"
    assert cfg.optim.name == "sgd"
    assert cfg.eval.score_threshold == pytest.approx(0.05)


def test_base_chain_is_recursive_relative_and_ordered(tmp_path):
    _write(tmp_path / "_base_" / "root.yaml", "optim:\n  lr: 0.1\n  momentum: 0.8\ntrainer:\n  max_epochs: 3\n")
    _write(tmp_path / "_base_" / "mid.yaml", "_base_: root.yaml\noptim:\n  lr: 0.2\n")  # relative to mid.yaml
    _write(tmp_path / "_base_" / "other.yaml", "trainer:\n  max_epochs: 5\nmodel:\n  backbone: {norm: frozen_bn}\n")
    exp = _write(
        tmp_path / "exp" / "run.yaml",
        "_base_: [../_base_/mid.yaml, ../_base_/other.yaml]\nmodel:\n  backbone: sasa_resnet26\n",
    )
    cfg = load_config(exp)
    assert cfg.optim.lr == pytest.approx(0.2)  # mid overrides root
    assert cfg.optim.momentum == pytest.approx(0.8)  # inherited from root through mid
    assert cfg.trainer.max_epochs == 5  # later base wins over earlier
    backbone = cfg.model.backbone  # sections merge by key; "backbone: NAME" is shorthand for backbone.name
    assert (backbone.name, backbone.norm, backbone.frozen_stages) == ("sasa_resnet26", "frozen_bn", None)


def test_file_overrides_base_and_cli_overrides_file(tmp_path):
    _write(tmp_path / "base.yaml", "optim:\n  lr: 0.1\n")
    exp = _write(tmp_path / "exp.yaml", "_base_: base.yaml\noptim:\n  lr: 0.3\ndata:\n  min_sizes: [64, 96]\n")
    cfg = load_config(
        exp,
        ["optim.lr=0.05", "data.min_sizes=[128]", "trainer.devices=2", "model.backbone.stage_ops=[conv,conv,sasa,aa]"],
    )
    assert cfg.optim.lr == pytest.approx(0.05)
    assert list(cfg.data.min_sizes) == [128]  # lists are replaced, not merged
    assert cfg.trainer.devices == 2
    assert list(cfg.model.backbone.stage_ops) == ["conv", "conv", "sasa", "aa"]


def test_unknown_key_names_key_and_file(tmp_path):
    _write(tmp_path / "base.yaml", "optim:\n  lr: 0.1\n")
    exp = _write(tmp_path / "exp.yaml", "_base_: base.yaml\noptim:\n  weight_decy: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(exp)
    message = str(info.value)
    assert "optim.weight_decy" in message and str(exp) in message and "weight_decay" in message


def test_unknown_key_in_base_names_the_base_file(tmp_path):
    base = _write(tmp_path / "base.yaml", "trainer:\n  max_epoch: 3\n")
    exp = _write(tmp_path / "exp.yaml", "_base_: base.yaml\n")
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch") as info:
        load_config(exp)
    assert str(base) in str(info.value)


def test_unknown_top_level_section(tmp_path):
    exp = _write(tmp_path / "exp.yaml", "modle:\n  arch: retinanet\n")
    with pytest.raises(ConfigError, match="'modle'.*did you mean 'model'"):
        load_config(exp)


def test_wrong_type_names_key_and_file(tmp_path):
    exp = _write(tmp_path / "exp.yaml", "trainer:\n  max_epochs: many\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml.*trainer\.max_epochs"):
        load_config(exp)


@pytest.mark.parametrize(
    ("override", "named"), [("optim.lrr=0.1", "optim.lrr"), ("optim.lr", "key=value"), ("optim.lr=fast", "optim.lr")]
)
def test_override_errors(override, named):
    with pytest.raises(ConfigError, match=named):
        load_config(None, [override])


def test_include_cycle_is_detected(tmp_path):
    _write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_missing_base_file_names_includer(tmp_path):
    exp = _write(tmp_path / "exp.yaml", "_base_: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml.*exp.yaml"):
        load_config(exp)


def test_bad_base_value_and_bad_top_level(tmp_path):
    with pytest.raises(ConfigError, match="_base_"):
        load_config(_write(tmp_path / "a.yaml", "_base_: {x: 1}\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path / "b.yaml", "- 1\n- 2\n"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("task=segmentation", "task"),
        ("optim.milestones=[8,11]", "fractions"),
        ("data.min_sizes=[]", "min_sizes"),
        ("eval.iou_types=[keypoints]", "iou_types"),
        ("data.flip_prob=2", "flip_prob"),
    ],
)
def test_value_validation(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_interpolation_resolves_in_saved_and_stored_config(tmp_path):
    exp = _write(tmp_path / "exp.yaml", "data:\n  max_size: 640\nmodel:\n  max_size: ${data.max_size}\n")
    cfg = load_config(exp)
    stored = config_to_dict(cfg)
    assert stored["model"]["max_size"] == 640
    saved = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert OmegaConf.load(saved).model.max_size == 640
    # a saved file loads back to the same config
    assert config_to_dict(load_config(saved)) == stored


def test_config_from_dict_round_trip_and_overrides():
    cfg = load_config(None, ["optim.lr=0.07"])
    rebuilt = config_from_dict(config_to_dict(cfg), ["eval.score_threshold=0.3"])
    assert rebuilt.optim.lr == pytest.approx(0.07)
    assert rebuilt.eval.score_threshold == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="stored config"):
        config_from_dict({"optim": {"bogus": 1}})


def test_every_shipped_config_loads():
    files = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if "_base_" not in p.parts)
    assert files, "no experiment configs found"
    for path in files:
        cfg = load_config(path)
        assert cfg.task in ("detection", "classification"), path


def test_deterministic_rcnn_on_gpu_fails_at_config_time_naming_the_key(monkeypatch):
    import torch

    from sasa_det.config import ConfigError
    from sasa_det.engine.experiment import load_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(
        ConfigError, match=r"trainer\.deterministic=true: model\.arch='faster_rcnn' uses torchvision's RoIAlign"
    ):
        load_config(None, ["model.arch=faster_rcnn", "trainer.deterministic=true"])
    # RetinaNet, or the CPU, is fine
    load_config(None, ["model.arch=retinanet", "trainer.deterministic=true"])
    load_config(None, ["model.arch=mask_rcnn", "trainer.deterministic=true", "trainer.accelerator=cpu"])


def test_wrong_data_paths_are_refused_by_key_before_the_run_writes_anything(tmp_path, monkeypatch):
    from tests.helpers import DEMO_CONFIG, load_tool

    images = tmp_path / "images"
    images.mkdir()
    annotations = _write(tmp_path / "train.json", "{}")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    overrides = [
        f"output_dir={out}",
        "data.shapes.root=null",
        f"data.train_images={images}",
        "data.train_ann=typo.json",  # relative: named with the folder it was looked for in
        f"data.val_images={annotations}",  # a file where a folder belongs
        f"data.val_ann={images}",  # a folder where the JSON belongs
    ]
    with pytest.raises(SystemExit) as stop:
        load_tool("train").main([str(DEMO_CONFIG), *overrides])
    message = str(stop.value)
    assert f"data.train_ann='typo.json': no such file (relative to the current folder {tmp_path})" in message
    assert "data.val_images=" in message and "is a file" in message
    assert "data.val_ann=" in message and "is a folder" in message
    assert "data.train_images" not in message  # the one right path is not blamed
    assert not out.exists()


def test_data_paths_of_an_evaluation_are_checked_for_the_validation_split_only(tmp_path):
    from sasa_det.engine.tasks import get_task

    cfg = load_config(overrides=[f"data.train_ann={tmp_path / 'gone.json'}", f"data.val_images={tmp_path}"])
    get_task("detection").check_data_paths(cfg, splits=("val",))
    with pytest.raises(ConfigError, match="data.train_ann=.*gone.json': no such file"):
        get_task("detection").check_data_paths(cfg)


def test_a_config_is_read_and_checked_without_torch():
    """A misspelt key, a value out of range or a wrong type is reported before torch loads (the option
    dataclasses sit in modules that import no torch); `optim.learning_rate` is answered with `lr`."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from sasa_det.config import ConfigError\n"
        "from sasa_det.engine.experiment import load_config\n"
        "load_config('configs/shapes_demo.yaml')\n"
        "for bad in ('optim.learning_rate=0.1', 'model.backbone.frozen_stages=9', 'trainer.max_steps=many'):\n"
        "    try:\n"
        "        load_config('configs/shapes_demo.yaml', [bad])\n"
        "    except ConfigError as error:\n"
        "        print(error)\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'pytorch_lightning') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert "unknown config key 'optim.learning_rate'; did you mean 'lr'?" in lines[0]
    assert "model.backbone.frozen_stages must be in 0..4" in lines[1]
    assert "trainer.max_steps" in lines[2]
    assert lines[-1] == "[]", f"loading a config imported {lines[-1]}"


def test_a_stored_config_that_predates_a_key_gets_the_value_it_trained_with():
    """``model.attention_norm`` came after configs were stored: a checkpoint's config without it rebuilds the
    un-normalised attention pyramid it trained (its weights have no norm layers); new configs normalise."""
    from sasa_det.engine.experiment import config_from_dict

    cfg = load_config("configs/shapes_demo.yaml", ["model.fpn=attention"])
    assert cfg.model.attention_norm == "layer"
    stored = OmegaConf.to_container(cfg, resolve=True)
    assert config_from_dict(stored).model.attention_norm == "layer"
    del stored["model"]["attention_norm"]
    assert config_from_dict(stored).model.attention_norm == "none"
