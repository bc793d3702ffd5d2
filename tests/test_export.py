"""ONNX / TorchScript export: the exported graph gives PyTorch's detections on images of other sizes than the one
it was recorded on (within BOX_TOLERANCE px and SCORE_TOLERANCE), with every attention layer of the papers in it;
the check fails when outputs disagree; a missing extra is named."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from sasa_det.engine.inference.export import (
    BOX_TOLERANCE,
    ExportedDetector,
    check_export,
    export_detector,
    load_exported,
    synthetic_check_images,
)
from sasa_det.layers import LocalSelfAttention2d
from sasa_det.layers.augmented_conv import AugmentedConv2d
from sasa_det.optional_extra import MissingExtra, require_extra
from tests.helpers import DEMO_CONFIG, load_tool

# different sizes and aspect ratios from the recorded one (the first): a graph fixed to one size fails
SIZES = [(64, 81), (81, 64), (51, 52)]


def _attention_detector(arch: str = "retinanet"):
    """An untrained detector with the attention stem, SASA and AA stages (and attention FPN / heads for
    RetinaNet), every candidate kept (score threshold 0) so that the check compares many detections."""
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.tasks import get_task

    overrides = [
        f"model.arch={arch}",
        "model.backbone={name: resnet26, base_width: 8, stage_ops: [conv, conv, sasa, aa], stem: attention}",
        "model.fpn_channels=64",
        "model.min_size=64",
        "model.max_size=96",
    ]
    if arch == "retinanet":
        overrides += ["model.fpn=attention", "model.head=attention", "model.sasa.kernel_size=3"]
    else:
        overrides += ["model.head_norm=null"]
    torch.manual_seed(0)
    detector = get_task("detection").build_module(load_config(DEMO_CONFIG, overrides), None).model.eval()
    if arch == "retinanet":
        detector.score_thresh = 0.0
    else:
        detector.roi_heads.score_thresh = 0.0
    return detector


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_attention_retinanet_matches_pytorch_on_other_sizes(tmp_path, fmt):
    detector = _attention_detector()
    images = synthetic_check_images(SIZES)
    paths = export_detector(detector, tmp_path / "model", fmt, images[0])
    assert set(paths) == {"sasa", "aa", "attention stem"}
    # the layers are back on their own paths after the export
    assert {m.impl for m in detector.modules() if isinstance(m, LocalSelfAttention2d)} == {"auto"}
    assert {m.attention_impl for m in detector.modules() if isinstance(m, AugmentedConv2d)} == {"auto"}
    check = check_export(load_exported(tmp_path / "model", fmt), ExportedDetector(detector), images)
    assert check.detections >= 3 * 10, "the check must compare real detections"
    assert check.image_sizes == SIZES
    assert check.passed(), check.summary()


@pytest.mark.slow
def test_exported_faster_rcnn_matches_pytorch(tmp_path):
    detector = _attention_detector("faster_rcnn")
    images = synthetic_check_images(SIZES)
    export_detector(detector, tmp_path / "model.onnx", "onnx", images[0])
    check = check_export(load_exported(tmp_path / "model.onnx", "onnx"), ExportedDetector(detector), images)
    assert check.detections > 0 and check.passed(), check.summary()


def test_check_fails_when_exported_outputs_disagree():
    detector = _attention_detector()
    wrapper = ExportedDetector(detector)
    images = synthetic_check_images(SIZES[:1])

    def shifted(image):  # PyTorch's own outputs with boxes moved by twice the tolerance
        with torch.no_grad():
            boxes, scores, labels = (t.numpy() for t in wrapper(image))
        return [boxes + 2 * BOX_TOLERANCE, scores, labels]

    def one_missing(image):
        with torch.no_grad():
            return [t.numpy()[1:] for t in wrapper(image)]

    check = check_export(shifted, wrapper, images)
    assert not check.passed()
    assert check.max_box_delta == pytest.approx(2 * BOX_TOLERANCE, rel=1e-3)
    assert check.max_score_delta == 0.0
    missing = check_export(one_missing, wrapper, images)
    assert not missing.passed() and missing.count_mismatches


def test_export_tool_prints_the_check_and_writes_onnx(tiny_detection_run, tmp_path, capsys):
    output = tmp_path / "model.onnx"
    argv = [tiny_detection_run["last_checkpoint"], "--output", str(output), "--score-threshold", "0"]
    report = load_tool("export").main(argv)
    printed = capsys.readouterr().out
    assert output.is_file() and report.check.passed()
    assert "max |Δ| boxes" in printed and "sasa: unfold" in printed and "aa: sdpa" in printed
    # the file runs on its own in onnxruntime, with an image size it was not recorded on
    import onnxruntime

    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"image": np.random.rand(3, 70, 90).astype(np.float32)})
    assert boxes.shape[1] == 4 and len(boxes) == len(scores) == len(labels) > 0
    assert labels.dtype == np.int64 and labels.min() >= 1


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(MissingExtra, match=r"sasa-det\[onnx\].*uv sync --extra onnx"):
        require_extra("onnxruntime", "onnx", "Checking an ONNX export")
