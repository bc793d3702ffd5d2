"""Unit checks of the detection engine's config translation, callbacks and module plumbing (no training)."""

import pytest
import torch
from omegaconf import OmegaConf

from sasa_det.backbones import ResNetOptions
from sasa_det.config import ConfigError
from sasa_det.engine.experiment import load_config
from sasa_det.engine.run.checkpoints import CONFIG_KEY, ExperimentConfigInCheckpoint
from sasa_det.engine.tasks import get_task
from sasa_det.engine.tasks.callbacks import format_coco_summary
from sasa_det.engine.tasks.detection import build_detection_model, iou_types_for
from sasa_det.layers import LocalSelfAttention2d, SasaOptions
from sasa_det.optim import schedule_lengths

TINY = [
    "model.num_classes=3",
    "model.backbone={name: resnet26, base_width: 8}",
    "model.fpn_channels=16",
    "model.min_size=64",
    "model.max_size=64",
]


def test_schedule_lengths_from_epochs_and_fractions():
    optim = OmegaConf.to_object(
        load_config(None, ["optim.warmup_epochs=1.5", "optim.schedule=multistep", "optim.milestones=[0.5,0.75]"]).optim
    )
    args = schedule_lengths(optim, total_steps=200, steps_per_epoch=20)
    assert args["warmup_steps"] == 30  # 1.5 epochs x 20 steps
    assert args["milestones"] == [100, 150]
    assert args["name"] == "multistep" and args["total_steps"] == 200


def test_schedule_lengths_warmup_steps_override_and_cap():
    optim = OmegaConf.to_object(load_config(None, ["optim.warmup_epochs=5", "optim.warmup_steps=7"]).optim)
    assert schedule_lengths(optim, 100, 10)["warmup_steps"] == 7
    assert schedule_lengths(optim, 5, 10)["warmup_steps"] == 5  # never longer than the run


def test_iou_types_default_by_arch_and_explicit():
    assert iou_types_for(load_config()) == ("bbox",)
    assert iou_types_for(load_config(None, ["model.arch=mask_rcnn"])) == ("bbox", "segm")
    assert iou_types_for(load_config(None, ["model.arch=mask_rcnn", "eval.iou_types=[bbox]"])) == ("bbox",)


def test_detection_model_needs_num_classes_and_reads_the_typed_sections():
    with pytest.raises(ValueError, match="model.num_classes"):
        build_detection_model(OmegaConf.to_object(load_config().model))
    options = [
        "model.backbone.frozen_stages=1",
        "model.sasa.impl=halo",
        "model.backbone.stage_ops=[conv,conv,sasa,conv]",
    ]
    model = OmegaConf.to_object(load_config(None, TINY + options).model)
    assert isinstance(model.backbone, ResNetOptions) and isinstance(model.sasa, SasaOptions)
    detector = build_detection_model(model)
    assert not any(p.requires_grad for p in detector.backbone.body.layer1.parameters())
    assert {m.impl for m in detector.modules() if isinstance(m, LocalSelfAttention2d)} == {"halo"}


def test_module_stores_plain_settings_not_the_config():
    module = get_task("detection").build_module(load_config(None, TINY), class_names=["a", "b", "c"])
    assert set(module.hparams) == {"optim", "iou_types", "score_threshold", "class_names", "eval_backend"}
    assert module.hparams["optim"]["name"] == "sgd" and module.hparams["class_names"] == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="num_clases"):
        load_config(None, TINY + ["model.num_clases=3"])


def test_misspelt_backbone_option_fails_at_load_naming_key_file_and_choices(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model:\n  backbone:\n    name: sasa_resnet26\n  sasa:\n    impl: shfit\n")
    with pytest.raises(
        ConfigError, match=r"exp.yaml: model.sasa.impl='shfit' is not one of .*'shift'.*did you mean 'shift'"
    ):
        load_config(path)
    path.write_text("model:\n  backbone:\n    name: sasa_resnet26\n    sasa_impl: shift\n")
    with pytest.raises(ConfigError, match="exp.yaml: unknown config key 'model.backbone.sasa_impl'"):
        load_config(path)
    with pytest.raises(ConfigError, match="model.backbone.stage_ops='sas' is not one of"):
        load_config(None, ["model.backbone.stage_ops=[conv, conv, sas, aa]"])
    with pytest.raises(ConfigError, match="model.backbone.name='resnet5' is not one of"):
        load_config(None, ["model.backbone=resnet5"])


def test_module_forward_in_eval_mode():
    module = get_task("detection").build_module(load_config(None, TINY)).eval()
    with torch.no_grad():
        out = module([torch.rand(3, 64, 48)])
    assert set(out[0]) >= {"boxes", "scores", "labels"}


def test_config_callback_writes_checkpoint_key():
    callback = ExperimentConfigInCheckpoint({"task": "detection"})
    checkpoint = {}
    callback.on_save_checkpoint(None, None, checkpoint)
    assert checkpoint[CONFIG_KEY] == {"task": "detection"}


def test_format_coco_summary_columns():
    text = format_coco_summary({"val/bbox/AP": 0.5, "val/bbox/AP50": 0.75, "val/segm/AP": 0.25})
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "bbox", "segm"]
    assert "0.5000" in lines[1] and "0.2500" in lines[1]
    assert lines[2].split()[-1] == "-"  # segm AP50 missing
    assert format_coco_summary({}) == "(no COCO metrics)"
