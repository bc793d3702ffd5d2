"""ONNX / TorchScript export: the exported graph gives PyTorch's detections on images of other sizes than the one
it was recorded on (within BOX_TOLERANCE px and SCORE_TOLERANCE), with every attention layer of the papers in it;
its resize gives PyTorch's size for every height and width from 64 to 160; the check fails when outputs
disagree; a TorchScript file loads with the package's loader; a missing extra is named."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform, _resize_image_and_masks

from sasa_det.detectors.traced_resize import traced_resize
from sasa_det.engine.inference.export import (
    BOX_TOLERANCE,
    ExportedDetector,
    check_export,
    export_detector,
    load_exported,
    sweep_image_sizes,
    synthetic_check_images,
)
from sasa_det.layers import LocalSelfAttention2d
from sasa_det.layers.augmented_conv import AugmentedConv2d
from sasa_det.optional_extra import MissingExtra, require_extra
from tests.helpers import DEMO_CONFIG, REPO, load_tool

# different sizes and aspect ratios from the recorded one (the first): a graph fixed to one size fails
SIZES = [(64, 81), (81, 64), (51, 52)]


def _attention_detector(arch: str = "retinanet", size: tuple[int, int] = (64, 96)):
    """An untrained detector with the attention stem, SASA and AA stages (and attention FPN / heads for
    RetinaNet), resizing to ``size`` (min_size, max_size), every candidate kept (score threshold 0) so that the
    check compares many detections."""
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.tasks import get_task

    overrides = [
        f"model.arch={arch}",
        "model.backbone={name: resnet26, base_width: 8, stage_ops: [conv, conv, sasa, aa], stem: attention}",
        "model.fpn_channels=64",
        f"model.min_size={size[0]}",
        f"model.max_size={size[1]}",
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


class _Preprocessing(nn.Module):
    """A detector's pre-processing alone: normalise and resize one ``[3, H, W]`` image (torchvision's transform)."""

    def __init__(self, min_size: int, max_size: int):
        super().__init__()
        self.transform = GeneralizedRCNNTransform(min_size, max_size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

    def forward(self, image):
        return self.transform.resize(self.transform.normalize(image))[0]


def _recorded_preprocessing(tmp_path, min_size: int, max_size: int, exact: bool = True):
    """``{format: run}`` of the pre-processing recorded as export_detector records it (run: image -> array)."""
    module = _Preprocessing(min_size, max_size).eval()
    example = torch.rand(3, 100, 120)
    with traced_resize(module) if exact else torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,), check_trace=False)
        onnx_file = tmp_path / f"preprocessing_{min_size}_{max_size}_{exact}.onnx"
        dynamic = {"image": {1: "height", 2: "width"}}
        torch.onnx.export(
            module,
            (example,),
            str(onnx_file),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            dynamic_axes=dynamic,
        )
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return {
        "torchscript": lambda image: traced(image).numpy(),
        "onnx": lambda image: session.run(None, {"image": image.numpy()})[0],
    }


def _resized_sizes(run, sizes):
    return [tuple(run(torch.zeros(3, h, w)).shape[-2:]) for h, w in sizes]


# the demo's resize (128, 128) over every height x width from 64 to 160; one where the shorter side binds too
@pytest.mark.parametrize(
    "min_size, max_size, sizes",
    [
        (128, 128, [(h, w) for h in range(64, 161) for w in range(64, 161)]),
        (96, 150, sweep_image_sizes(64, 160)),
    ],
)
def test_exported_preprocessing_resizes_to_pytorchs_size_for_every_size(tmp_path, min_size, max_size, sizes):
    # the reference: torchvision's resize run eagerly, as PyTorch runs the model (1 channel: only the size counts)
    expected = [
        tuple(_resize_image_and_masks(torch.empty(1, h, w), min_size, max_size)[0].shape[-2:]) for h, w in sizes
    ]
    runs = _recorded_preprocessing(tmp_path, min_size, max_size)
    for fmt, run in runs.items():
        got = _resized_sizes(run, sizes)
        wrong = [(size, want, have) for size, want, have in zip(sizes, expected, got) if want != have]
        assert not wrong, f"{fmt}: {len(wrong)} size(s) resized differently from PyTorch, e.g. {wrong[:5]}"
        # the pixels too, on a few images
        for image in synthetic_check_images([(103, 103), (64, 97), (159, 120)]):
            np.testing.assert_allclose(run(image), _Preprocessing(min_size, max_size).eval()(image), atol=1e-4)


def test_torchvisions_own_traced_resize_rounds_some_sizes_differently(tmp_path):
    """Why the export records its own resize: traced as torchvision writes it, 103x103 becomes 128 px, not 127."""
    sizes = [(103, 103), (64, 97), (128, 129)]
    expected = [(127, 127), (84, 128), (127, 128)]
    runs = _recorded_preprocessing(tmp_path, 128, 128, exact=False)
    assert _resized_sizes(runs["onnx"], sizes) == [(128, 128), (84, 127), (127, 128)] != expected
    assert _resized_sizes(_recorded_preprocessing(tmp_path, 128, 128)["onnx"], sizes) == expected


# sizes whose scaled side lies within float32 rounding of an integer (traced as torchvision writes it, they get one
# pixel more or less than in PyTorch), and one that does not
ROUNDING_SIZES = [(103, 103), (64, 97), (159, 120), (128, 129)]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_detections_match_pytorch_where_the_rounding_differs(tmp_path, fmt):
    detector = _attention_detector(size=(128, 128))  # the demo's resize
    images = synthetic_check_images(ROUNDING_SIZES)
    export_detector(detector, tmp_path / "model", fmt, synthetic_check_images([(100, 120)])[0])
    check = check_export(load_exported(tmp_path / "model", fmt), ExportedDetector(detector), images)
    assert check.detections >= 4 * 10, "the check must compare real detections"
    assert check.passed(), check.summary()


def test_torchscript_file_loads_with_the_package_loader_in_a_fresh_process(tmp_path):
    detector = _attention_detector()
    image = synthetic_check_images([(70, 90)])[0]
    export_detector(detector, tmp_path / "model.pt", "torchscript", image)
    torch.save(image, tmp_path / "image.pt")
    with torch.no_grad():
        expected = ExportedDetector(detector)(image)
    # a bare torch.jit.load fails before torchvision is imported; sasa_det.load_exported imports it first
    script = (
        "import sys, torch\n"
        "try:\n    torch.jit.load(sys.argv[1])\nexcept RuntimeError as error:\n    print('bare:', 'torchvision::nms' in str(error))\n"
        "import sasa_det\n"
        "boxes, scores, labels = sasa_det.load_exported(sys.argv[1])(torch.load(sys.argv[2]))\n"
        "torch.save([torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels)], sys.argv[3])\n"
    )
    argv = [
        sys.executable,
        "-c",
        script,
        str(tmp_path / "model.pt"),
        str(tmp_path / "image.pt"),
        str(tmp_path / "out.pt"),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "bare: True" in done.stdout
    for got, want in zip(torch.load(tmp_path / "out.pt"), expected):
        torch.testing.assert_close(got, want, atol=1e-3, rtol=0)
    # the format is read from the file: a zip archive is TorchScript
    assert load_exported(tmp_path / "model.pt")(image)[0].shape == expected[0].shape
    with pytest.raises(FileNotFoundError, match="no exported model"):
        load_exported(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="written by torch.save.*tools/export.py"):
        load_exported(tmp_path / "image.pt")  # a tensor saved with torch.save, as a checkpoint is


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


@pytest.fixture(scope="module")
def trained_demo_run(tmp_path_factory) -> dict:
    """The demo config trained for 150 steps on 300 shapes images (about a minute on a CPU): its checkpoint and
    validation images."""
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.runner import train

    root = tmp_path_factory.mktemp("trained_demo")
    overrides = [
        f"output_dir={root / 'run'}",
        f"data.shapes.root={root / 'shapes'}",
        "data.shapes.num_train=300",
        "data.shapes.num_val=20",
        "data.num_workers=0",
        "trainer.max_epochs=-1",
        "trainer.max_steps=150",
        "trainer.check_val_every_n_epoch=100",
        "trainer.enable_progress_bar=false",
        "eval.save_visualization=0",
    ]
    result = train(load_config(DEMO_CONFIG, overrides))
    return {
        "checkpoint": result["last_checkpoint"],
        "val_images": sorted(str(p) for p in (root / "shapes" / "val").glob("*.png")),
    }


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_trained_model_export_matches_pytorch_on_every_size_from_64_to_160(trained_demo_run, tmp_path, fmt):
    """The demo's model trained briefly (its detections are real objects near the score threshold, where one
    resized pixel changes the count), exported and checked on every height and width from 64 to 160."""
    argv = [trained_demo_run["checkpoint"], "--format", fmt, "--output", str(tmp_path / "model"), "--sweep", "64:160"]
    report = load_tool("export").main([*argv, "--images", *trained_demo_run["val_images"]])
    check = report.check
    assert len(check.image_sizes) == 3 * 97 and check.detections >= 3 * 97, check.summary()
    assert check.passed(), check.summary()
