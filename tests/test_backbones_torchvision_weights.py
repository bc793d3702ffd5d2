"""A torchvision (or timm: the same names for a plain-stem ResNet) ResNet-50 state dict loads into the
convolutions and norms of our backbones, every tensor equal; attention layers keep their initialisation; what
was set is shown by part (stem, stages, their attention layers, the file's ``fc``)."""

import json

import pytest
import torch
import torchvision

from sasa_det.backbones import ResNetOptions
from sasa_det.backbones.presets import backbone_from_options
from sasa_det.checkpoint_file import CheckpointFileError, check_weights_file

#: conv1 + bn1 (4 tensors) of a stem; conv1, bn1, bn2, conv3, bn3 of a bottleneck (the 3x3 conv2 aside); the
#: downsample conv + BN of a stage's first block. ResNet-50's blocks per stage: 3, 4, 6, 3.
STEM, BOTTLENECK_BUT_3X3, DOWNSAMPLE, BLOCKS = 5, 14, 5, (3, 4, 6, 3)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """A torchvision resnet50 state dict (random weights, torchvision's names and shapes; BN statistics moved
    away from their initial values too) saved as a .pth file."""
    torch.manual_seed(0)
    state = torchvision.models.resnet50(weights=None).state_dict()
    with torch.no_grad():
        for tensor in state.values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) * 0.1)
    path = tmp_path_factory.mktemp("tv") / "resnet50.pth"
    torch.save(state, path)
    return path, state


def _build(name: str, weights=None):
    torch.manual_seed(3)
    return backbone_from_options(ResNetOptions(name=name, weights=str(weights) if weights else None))


def test_every_tensor_of_a_torchvision_resnet50_loads_into_our_conv_resnet50(torchvision_file, capsys):
    path, state = torchvision_file
    backbone = _build("resnet50", path)
    ours = backbone.state_dict()
    assert set(state) - set(ours) == {"fc.weight", "fc.bias"}
    for key in set(state) & set(ours):
        torch.testing.assert_close(ours[key], state[key], rtol=0, atol=0, msg=key)
    stages = [n * (BOTTLENECK_BUT_3X3 + 1) + DOWNSAMPLE for n in BLOCKS]
    assert backbone.weights_report["parts"] and [p["line"] for p in backbone.weights_report["parts"]] == [
        f"stem: loaded {STEM}/{STEM}",
        *(f"stage{k}: loaded {n}/{n}" for k, n in enumerate(stages, start=1)),
        "fc: skipped (2 file tensors, no place in the model)",
    ]
    shown = capsys.readouterr().out
    assert f"backbone weights {path}, by part:\n  stem: loaded 5/5\n  stage1: loaded 50/50\n" in shown


@pytest.mark.parametrize("name", ["sasa_resnet50_convstem", "sasa_resnet50"])
def test_a_sasa_resnet50_takes_the_conv_stem_and_1x1s_and_keeps_its_attention_layers(torchvision_file, name, capsys):
    path, state = torchvision_file
    fresh, loaded = _build(name).state_dict(), _build(name, path).state_dict()
    attention = [k for k in loaded if ".conv2." in k or k.startswith("stem.")]
    assert attention
    for key in attention:  # untouched: as a backbone built the same way without weights
        torch.testing.assert_close(loaded[key], fresh[key], rtol=0, atol=0, msg=key)
    conv = [k for k in loaded if k not in attention]
    assert all(k in state for k in conv)
    for key in conv:
        torch.testing.assert_close(loaded[key], state[key], rtol=0, atol=0, msg=key)
    lines = capsys.readouterr().out.splitlines()
    stem = (
        "  stem: loaded 5/5" if name.endswith("convstem") else "  stem: skipped (5 file tensors, no place in the model)"
    )
    assert stem in lines
    for k, n in enumerate(BLOCKS, start=1):
        assert (
            f"  stage{k}: loaded {n * BOTTLENECK_BUT_3X3 + DOWNSAMPLE}/{n * BOTTLENECK_BUT_3X3 + DOWNSAMPLE}" in lines
        )
        tables = [line for line in lines if line.startswith(f"  stage{k} attention layers: kept initialised (")]
        assert len(tables) == 1 and tables[0].endswith(f"tensors); {n} file tensors unused")  # the 3x3 convs
    if not name.endswith("convstem"):
        assert any(line.startswith("  stem attention layers: kept initialised (") for line in lines)


def test_init_from_a_torchvision_file_reports_by_part_in_the_run_directory(torchvision_file, tmp_path, capsys):
    from sasa_det.engine.run.init_from import initialize_from
    from sasa_det.engine.run.run_directory import RunDirectory
    from sasa_det.engine.tasks.detection import preset_detection_model

    path, _ = torchvision_file
    detector = preset_detection_model("retinanet", 5, backbone="aa_resnet50", fpn_channels=64, min_size=64, max_size=64)
    initialize_from(detector, path, backbone_prefix="backbone.body.", run_dir=RunDirectory(tmp_path))
    report = json.loads((tmp_path / "init_from_report.json").read_text())
    lines = [part["line"] for part in report["parts"]]
    assert lines[:2] == ["stem: loaded 5/5", "stage1: loaded 50/50"]  # AA: stage 1 is all convolutions
    assert any(line.startswith("stage3 attention layers: kept initialised (") for line in lines)
    assert "fc: skipped (2 file tensors, no place in the model)" in lines
    assert any(line.startswith("head.classification_head: loaded 0/") for line in lines)
    shown = capsys.readouterr().out
    assert f"model.init_from weights {path}, by part:\n  stem: loaded 5/5\n" in shown


def test_a_safetensors_file_is_refused_with_the_conversion(tmp_path):
    (tmp_path / "resnet50.safetensors").write_bytes(b"{}")
    with pytest.raises(
        CheckpointFileError, match=r"resnet50.safetensors: a safetensors file, .* torch.save\(st.load_file"
    ):
        check_weights_file(tmp_path / "resnet50.safetensors", "model.backbone.weights")
