"""Predictor and tools/predict.py: same detections as the module's own forward, for every kind of input;
the tool over folders with unreadable files, duplicate names, 16-bit PNGs and images without detections."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sasa_det import Predictor
from sasa_det.engine.inference.loading import load_module
from sasa_det.engine.inference.prediction_files import expand_image_inputs, output_names
from tests.helpers import load_tool


@pytest.fixture(scope="module")
def checkpoint(tiny_detection_run):
    return tiny_detection_run["last_checkpoint"]


@pytest.fixture(scope="module")
def val_image(tiny_detection_run):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(tiny_detection_run["config_path"]))
    return sorted(Path(cfg.data.val_images).glob("*.png"))[0]


def test_predictor_equals_module_forward_for_every_input_kind(checkpoint, val_image):
    module, _ = load_module(checkpoint)
    module.eval()
    module.model.score_thresh = 0.0  # an untrained model: keep every candidate
    rgb = np.array(Image.open(val_image).convert("RGB"))
    with torch.no_grad():
        expected = module([torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0])[0]
    predictor = Predictor(checkpoint, score_threshold=0.0)
    assert not predictor.module.training
    keep = expected["scores"] >= 0.0
    assert keep.sum() > 0
    inputs = {
        "path": (str(val_image), "RGB"),
        "pil": (Image.open(val_image), "RGB"),
        "numpy rgb": (rgb, "RGB"),
        "numpy bgr": (rgb[:, :, ::-1].copy(), "BGR"),
        "uint8 tensor": (torch.from_numpy(rgb).permute(2, 0, 1), "RGB"),
    }
    for kind, (image, channels) in inputs.items():
        result = predictor(image, channels=channels)
        torch.testing.assert_close(result["boxes"], expected["boxes"][keep], msg=kind)
        torch.testing.assert_close(result["scores"], expected["scores"][keep], msg=kind)
        assert torch.equal(result["labels"], expected["labels"][keep]), kind
        assert result["class_names"] == [["circle", "square", "triangle"][i - 1] for i in result["labels"].tolist()]
    batch = predictor([str(val_image), rgb], channels="RGB")
    assert isinstance(batch, list) and len(batch) == 2
    torch.testing.assert_close(batch[1]["scores"], expected["scores"][keep])


def test_predictor_threshold_and_any_size(checkpoint):
    predictor = Predictor(checkpoint, score_threshold=0.0)
    odd = np.random.default_rng(0).integers(0, 255, size=(45, 77, 3), dtype=np.uint8)
    result = predictor(odd)
    assert len(result["boxes"]) > 0
    assert (result["boxes"][:, 2] <= 77 + 1e-3).all() and (result["boxes"][:, 3] <= 45 + 1e-3).all()
    assert (result["scores"][:-1] >= result["scores"][1:]).all()
    strict = Predictor(checkpoint, score_threshold=0.999)(odd)
    assert len(strict["boxes"]) == 0 and strict["class_names"] == []


def test_output_names_keep_structure_and_never_collide(tmp_path):
    for rel in ("a/x.jpg", "b/x.jpg", "b/x.png", "b/y.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    files, problems = expand_image_inputs(
        [tmp_path / "a", tmp_path / "b", tmp_path / "a" / "x.jpg", str(tmp_path / "nothing*.png")]
    )
    assert len(files) == 4 and problems == [(str(tmp_path / "nothing*.png"), "pattern matches no file")]
    names = [str(n) for n in output_names(files)]
    assert names == ["a/x.png", "b/x.jpg.png", "b/x.png.png", "b/y.png"]


def test_predict_tool_on_a_folder_with_bad_file_duplicates_and_16_bit(checkpoint, val_image, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    for sub in ("one", "two"):
        (inputs / sub).mkdir(parents=True)
        Image.open(val_image).save(inputs / sub / "same.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    sixteen = (np.linspace(0, 30000, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(sixteen).save(inputs / "deep.png")
    assert Image.open(inputs / "deep.png").mode.startswith("I")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        load_tool("predict").main(
            [
                checkpoint,
                str(inputs),
                "--out",
                str(out),
                "--score-threshold",
                "0.9999",
                "--no-progress",
                "model.min_size=64",
            ]
        )
    assert stop.value.code == 1
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "1 input(s) failed" in captured.err
    assert "3 image(s) without any detection" in captured.out
    drawn = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert drawn == ["deep.png", "one/same.png", "two/same.png"]
    deep = np.asarray(Image.open(out / "deep.png"))
    assert deep.mean() < 130  # scaled from 16 bits (0..117), not clipped to white
    images = json.loads((out / "images.json").read_text())
    assert [c["name"] for c in images["categories"]] == ["circle", "square", "triangle"]
    assert len(images["images"]) == 3 and json.loads((out / "detections.json").read_text()) == []


def test_predict_tool_draws_detections_and_writes_coco_results(checkpoint, val_image, tmp_path):
    out = tmp_path / "out"
    report = load_tool("predict").main(
        [checkpoint, str(val_image), "--out", str(out), "--score-threshold", "0.0", "--no-progress"]
    )
    assert report.written == [out / val_image.name] and not report.failed
    detections = json.loads((out / "detections.json").read_text())
    assert detections and {"image_id", "category_id", "bbox", "score"} <= set(detections[0])
    drawn = np.asarray(Image.open(report.written[0]))
    assert not np.array_equal(drawn, np.asarray(Image.open(val_image).convert("RGB")))  # boxes were drawn


def test_predict_tool_keeps_set_as_an_alias():
    args = load_tool("predict").parse_args(["c.ckpt", "x.png", "a.b=1", "--out", "o", "--set", "c.d=2"])
    assert args.images == ["x.png"] and args.overrides == ["a.b=1", "c.d=2"]
