"""Unit checks of the detection engine's config translation, callbacks and module plumbing (no training)."""

import pytest
import torch

from sasa_det.config import ConfigError, config_to_dict, load_config
from sasa_det.engine.callbacks import ExperimentConfigInCheckpoint, format_coco_summary
from sasa_det.engine.detection_module import DetectionModule, detector_kwargs, iou_types_for
from sasa_det.engine.optim import schedule_lengths

TINY = [
    "model.num_classes=3",
    "model.backbone=resnet26",
    "model.backbone_overrides={base_width: 8}",
    "model.fpn_channels=16",
    "model.min_size=64",
    "model.max_size=64",
]


def test_schedule_lengths_from_epochs_and_fractions():
    optim = config_to_dict(load_config(None, ["optim.warmup_epochs=1.5", "optim.schedule=multistep", "optim.milestones=[0.5,0.75]"]))["optim"]
    args = schedule_lengths(optim, total_steps=200, steps_per_epoch=20)
    assert args["warmup_steps"] == 30  # 1.5 epochs x 20 steps
    assert args["milestones"] == [100, 150]
    assert args["name"] == "multistep" and args["total_steps"] == 200


def test_schedule_lengths_warmup_steps_override_and_cap():
    optim = config_to_dict(load_config(None, ["optim.warmup_epochs=5", "optim.warmup_steps=7"]))["optim"]
    assert schedule_lengths(optim, 100, 10)["warmup_steps"] == 7
    assert schedule_lengths(optim, 5, 10)["warmup_steps"] == 5  # never longer than the run


def test_iou_types_default_by_arch_and_explicit():
    assert iou_types_for(config_to_dict(load_config())) == ("bbox",)
    assert iou_types_for(config_to_dict(load_config(None, ["model.arch=mask_rcnn"]))) == ("bbox", "segm")
    assert iou_types_for(config_to_dict(load_config(None, ["model.arch=mask_rcnn", "eval.iou_types=[bbox]"]))) == ("bbox",)


def test_detector_kwargs_requires_num_classes():
    with pytest.raises(ValueError, match="model.num_classes"):
        detector_kwargs(config_to_dict(load_config())["model"])


def test_module_stores_plain_config_and_rejects_unknown_keys():
    cfg = load_config(None, TINY)
    module = DetectionModule(cfg, class_names=["a", "b", "c"])
    stored = module.hparams["config"]
    assert isinstance(stored, dict) and stored["model"]["num_classes"] == 3
    assert module.hparams["class_names"] == ["a", "b", "c"]
    bad = config_to_dict(cfg)
    bad["model"]["num_clases"] = 3
    with pytest.raises(ConfigError, match="num_clases"):
        DetectionModule(bad)


def test_module_forward_in_eval_mode():
    module = DetectionModule(load_config(None, TINY)).eval()
    with torch.no_grad():
        out = module([torch.rand(3, 64, 48)])
    assert set(out[0]) >= {"boxes", "scores", "labels"}


def test_config_callback_writes_checkpoint_key():
    callback = ExperimentConfigInCheckpoint({"task": "detection"})
    checkpoint = {}
    callback.on_save_checkpoint(None, None, checkpoint)
    assert checkpoint[ExperimentConfigInCheckpoint.KEY] == {"task": "detection"}


def test_format_coco_summary_columns():
    text = format_coco_summary({"val/bbox/AP": 0.5, "val/bbox/AP50": 0.75, "val/segm/AP": 0.25})
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "bbox", "segm"]
    assert "0.5000" in lines[1] and "0.2500" in lines[1]
    assert lines[2].split()[-1] == "-"  # segm AP50 missing
    assert format_coco_summary({}) == "(no COCO metrics)"
