"""One owner for every option: declared beside the code that uses it, validated once when the config is loaded,
carried typed to the builders, handed to the modules as layer factories."""

from __future__ import annotations

import ast
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from sasa_det.backbones import AAOptions, ResNet, ResNetOptions, backbone_from_options
from sasa_det.config import ConfigError, choice_table, config_to_dict
from sasa_det.data import CocoDetectionDataset, DatasetChecks, ImageRecord, load_checked_coco
from sasa_det.detectors import AttentionFeaturePyramidNetwork, AttentionLastLevelP6P7
from sasa_det.detectors.attention_retinanet_head import attention_tower
from sasa_det.engine.experiment import config_from_dict, load_config
from sasa_det.engine.tasks.detection import build_detection_model
from sasa_det.layers import AugmentedConv2d, LocalSelfAttention2d, SasaOptions

PACKAGE = Path(__file__).resolve().parents[1] / "sasa_det"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "yaml, message",
    [
        (
            "model:\n  sasa:\n    impl: shfit\n",
            r"model\.sasa\.impl='shfit' is not one of \[.*'shift'.*\] \(did you mean 'shift'\?\)",
        ),
        ("model:\n  head_norm: groups\n", r"model\.head_norm='groups' is not one of \['group', 'none'\]"),
        ("data:\n  check_images: headers\n", r"data\.check_images='headers' is not one of .*did you mean 'header'"),
        (
            "eval:\n  backend: detectron2\n",
            r"eval\.backend='detectron2' is not one of \['auto', 'hotcoco', 'faster_coco_eval', 'pycocotools'\]",
        ),
        (
            "task: classification\nclassifier:\n  backbone:\n    norm: gn\n",
            r"classifier\.backbone\.norm='gn' is not one of \['bn', 'frozen_bn'\]",
        ),
    ],
)
def test_a_bad_choice_fails_at_load_naming_file_key_and_choices(tmp_path, yaml, message):
    path = _write(tmp_path / "exp.yaml", yaml)
    with pytest.raises(ConfigError, match=f"exp.yaml: {message}"):
        load_config(path)


def test_every_choice_is_declared_by_the_package_that_uses_it():
    from sasa_det.data.shapes.options import ShapesOptions
    from sasa_det.detectors import DetectorOptions
    from sasa_det.engine.experiment import ClassificationExperiment, DetectionExperiment, Experiment
    from sasa_det.evaluation import EvalOptions, TtaOptions
    from sasa_det.experiment_loggers import LoggingOptions
    from sasa_det.optim import OptimSettings

    owners = (
        SasaOptions,
        ResNetOptions,
        DetectorOptions,
        DatasetChecks,
        EvalOptions,
        TtaOptions,
        OptimSettings,
        LoggingOptions,
        ShapesOptions,
        Experiment,
    )
    table = {**choice_table(ClassificationExperiment), **choice_table(DetectionExperiment)}
    assert {"model.sasa.impl", "model.backbone.stage_ops", "model.arch", "data.on_bad_records", "optim.name"} <= set(
        table
    )
    declared_in = {
        key: next(o for o in owners if field in dataclasses.fields(o)).__module__ for key, field in table.items()
    }
    assert declared_in["model.sasa.impl"] == "sasa_det.layers.local_attention.options"
    assert declared_in["classifier.backbone.stem"] == "sasa_det.backbones.options"
    assert declared_in["data.shapes.background"] == "sasa_det.data.shapes.options"
    # the experiment's own key is the only one the experiment schema declares; every other option belongs to its consumer
    assert sorted(key for key, module in declared_in.items() if module == "sasa_det.engine.experiment") == ["task"]


def test_modules_between_config_and_layers_never_check_the_sasa_options():
    """Only the option's owner (the SASA layer and its registry) knows the implementations; the backbone,
    detector, data and engine code receive a factory, so there is nothing for them to check."""
    mentions = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "available_local_attention_impls" in path.read_text(encoding="utf-8")
        and not path.is_relative_to(PACKAGE / "layers")
        and not path.is_relative_to(PACKAGE / "analysis")  # the benchmarks and the GPU check run every implementation
    )
    assert mentions == []
    import sasa_det.layers as layers

    assert not hasattr(layers, "check_sasa_options") and not hasattr(layers, "SASA_OPTIONS")


# ------------------------------------------------------------------------------------------------ typed, factories
def test_sections_arrive_typed_and_the_sasa_options_reach_every_sasa_layer():
    cfg = load_config(
        None,
        [
            "model.num_classes=2",
            "model.backbone={name: resnet26, base_width: 16, stage_ops: [conv, sasa, sasa, aa]}",
            "model.backbone.aa.heads=2",
            "model.fpn=attention",
            "model.head=attention",
            "model.fpn_channels=32",
            "model.sasa.kernel_size=5",
            "model.sasa.heads=4",
            "model.sasa.impl=halo",
        ],
    )
    model = OmegaConf.to_object(cfg.model)
    assert model.sasa == SasaOptions(impl="halo", kernel_size=5, heads=4)
    assert isinstance(model.backbone, ResNetOptions) and model.backbone.aa == AAOptions(heads=2)
    detector = build_detection_model(model)
    layers = {name: m for name, m in detector.named_modules() if isinstance(m, LocalSelfAttention2d)}
    assert {name.split(".")[1] for name in layers} >= {"body", "fpn", "classification_head", "regression_head"}
    assert {(m.kernel_size, m.heads, m.impl) for m in layers.values()} == {(5, 4, "halo")}
    assert {m.heads for m in detector.modules() if isinstance(m, AugmentedConv2d)} == {2}


class _Recorder:
    """A layer factory that records what it was asked to build and builds a SASA layer."""

    def __init__(self):
        self.calls = []

    def __call__(self, in_channels, out_channels, stride=1):
        self.calls.append((in_channels, out_channels, stride))
        return LocalSelfAttention2d(in_channels, out_channels, kernel_size=3, heads=2, stride=stride)


def test_modules_build_their_layers_with_the_factory_they_are_given():
    recorder = _Recorder()
    backbone = ResNet((1, 1, 1, 1), spatial_ops=recorder, base_width=8)
    assert recorder.calls == [(8, 8, 1), (16, 16, 2), (32, 32, 2), (64, 64, 2)]
    assert all(isinstance(stage[0].conv2, LocalSelfAttention2d) for stage in backbone.stages())

    recorder = _Recorder()
    AttentionFeaturePyramidNetwork([8, 16], 16, AttentionLastLevelP6P7(16, 16, recorder), attention_layer=recorder)
    assert recorder.calls == [(16, 16, 2), (16, 16, 2), (16, 16, 1), (16, 16, 1)]

    recorder = _Recorder()
    tower = attention_tower(16, num_layers=2, attention_layer=recorder, norm="none")
    assert recorder.calls == [(16, 16, 1)] * 2 and tower[0][0].kernel_size == 3


def test_a_backbone_built_from_options_has_the_configured_sasa_layers():
    options = ResNetOptions("sasa_resnet26_convstem", base_width=16)
    sasa = SasaOptions(kernel_size=3, heads=2, mask_padding=True, rel_init="inv_sqrt_d")
    backbone = backbone_from_options(options, sasa)
    layers = [m for m in backbone.modules() if isinstance(m, LocalSelfAttention2d)]
    assert len(layers) == sum((1, 2, 4, 1))
    assert {(m.kernel_size, m.heads, m.mask_padding, m.rel_init) for m in layers} == {(3, 2, True, "inv_sqrt_d")}
    assert SasaOptions().factory()(16, 16).kernel_size == 7  # the layer's defaults are the options' own


@pytest.mark.parametrize("value, relative", [("null", True), ("true", True), ("false", False)])
def test_the_aa_relative_option_reaches_every_augmented_convolution(value, relative):
    """The example of a backbone option added in one place (docs/architecture.md): one field of AAOptions."""
    cfg = load_config(
        None,
        [
            "model.num_classes=2",
            "model.backbone={name: aa_resnet50, base_width: 16, blocks_per_stage: [1, 1, 1, 1]}",
            "model.backbone.aa.heads=2",
            f"model.backbone.aa.relative={value}",
            "model.fpn_channels=32",
            "model.max_size=64",
        ],
    )
    layers = [
        m for m in build_detection_model(OmegaConf.to_object(cfg.model)).modules() if isinstance(m, AugmentedConv2d)
    ]
    assert len(layers) == 3
    assert {(m.relative, m.rel_width is not None, m.rel_height is not None) for m in layers} == {(relative,) * 3}
    with pytest.raises(ConfigError, match="model.backbone.aa.relative"):
        load_config(None, ["model.backbone.aa.relative=sometimes"])


# ------------------------------------------------------------------------------------------------ renamed keys
def test_a_renamed_backbone_key_still_works_with_a_message_naming_the_new_key(tmp_path):
    path = _write(
        tmp_path / "old.yaml",
        "model:\n  backbone:\n    name: aa_resnet50\n    aa_heads: 2\n    aa_pool_attention_stages: [2]\n",
    )
    with pytest.warns(FutureWarning) as caught:
        cfg = load_config(path)
    messages = sorted(str(w.message).split("old.yaml: ")[1] for w in caught)
    assert messages == [
        "model.backbone.aa_heads is deprecated; use model.backbone.aa.heads",
        "model.backbone.aa_pool_attention_stages is deprecated; use model.backbone.aa.pool_attention_stages",
    ]
    assert cfg.model.backbone.aa.heads == 2 and list(cfg.model.backbone.aa.pool_attention_stages) == [2]
    with pytest.warns(
        FutureWarning, match=r"model.backbone.stem_heads is deprecated; use model.backbone.attention_stem.heads"
    ):
        assert load_config(None, ["model.backbone.stem_heads=2"]).model.backbone.attention_stem.heads == 2
    with pytest.raises(ConfigError, match="aa_heads is the former name of model.backbone.aa.heads and both are set"):
        load_config(None, ["model.backbone={aa_heads: 2, aa: {heads: 4}}"])


def test_a_stored_config_with_the_former_keys_loads_quietly_when_they_are_null():
    stored = config_to_dict(load_config())
    stored["model"]["backbone"]["aa_heads"] = None  # what a checkpoint of an earlier version holds
    stored["classifier"] = {"backbone": {"stem_mixtures": None}}  # every config held a classifier section then
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = config_from_dict(stored)
    assert cfg.model.backbone.aa.heads is None


# ------------------------------------------------------------------------------------------------ records
def test_load_checked_coco_gives_plain_records_and_a_report_without_a_dataset(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(images / name)
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "b.png", "height": 20, "width": 30},
        ],
        "categories": [{"id": 9, "name": "nine"}, {"id": 4, "name": "four"}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 9, "bbox": [25, 2, 10, 6], "iscrowd": 0},
            {"id": 6, "image_id": 1, "category_id": 4, "bbox": [1, 1, 4, 4], "iscrowd": 0, "area": 16},
        ],
    }
    ann = _write(tmp_path / "ann.json", json.dumps(data))
    records, report = load_checked_coco(ann, images, DatasetChecks(check_cache=False), keep_empty=False)
    assert records.class_names == ["four", "nine"] and records.category_ids == [4, 9]
    (record,) = records.images
    assert isinstance(record, ImageRecord) and (record.image_id, record.file_name, record.height, record.width) == (
        1,
        "a.png",
        20,
        30,
    )
    assert record.boxes.dtype == np.float32 and record.boxes.tolist() == [[25, 2, 30, 8], [1, 1, 5, 5]]  # clipped
    assert record.labels.tolist() == [2, 1] and record.annotation_ids.tolist() == [5, 6]
    assert report.fixes["box clipped to the image"] == [5] and report.fixes["missing area filled in from the box"] == [
        5
    ]
    assert report.counts["images_dropped_empty"] == 1 and report.counts["images_kept"] == 1
    assert records.ground_truth["annotations"][0]["area"] == 60.0  # what evaluation compares with
    # every field is a plain value: a record survives a trip through JSON-like plain data and numpy alone
    plain = dataclasses.asdict(record)
    assert all(isinstance(v, (int, str, list, np.ndarray)) for v in plain.values())
    _, target = CocoDetectionDataset(records)[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[25.0, 2.0, 30.0, 8.0], [1.0, 1.0, 5.0, 5.0]]))


def test_the_dataset_knows_no_json_checks_or_reports():
    source = (PACKAGE / "data" / "loading" / "dataset.py").read_text(encoding="utf-8")
    imported = {
        alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert not imported & {
        "check_coco_dict",
        "check_image_files",
        "DatasetReport",
        "DatasetChecks",
        "load_checked_coco",
    }
    assert "import json" not in source
