"""Backbone weights round-trip through classifier state dicts, Lightning-style checkpoints and plain files."""

import pytest
import torch

from sasa_det.backbones import build_backbone, build_classifier, load_backbone_weights
from sasa_det.backbones.weights import find_backbone_prefix

NAME = "sasa_resnet26"  # attention stem + SASA: every kind of parameter name of the conv and SASA parts
KWARGS = {"base_width": 16}


def _trained_classifier():
    torch.manual_seed(1)
    classifier = build_classifier(NAME, num_classes=5, **KWARGS)
    with torch.no_grad():  # move every tensor away from its initial value, BN statistics included
        for tensor in list(classifier.parameters()) + [b for b in classifier.buffers() if b.is_floating_point()]:
            tensor.add_(torch.randn_like(tensor) * 0.02)
    return classifier.eval()


def _assert_same_features(a, b):
    x = torch.randn(2, 3, 37, 29, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fa, fb = a.eval()(x), b.eval()(x)
    common = [key for key in fa if key in fb]
    assert common
    for key in common:
        torch.testing.assert_close(fa[key], fb[key], rtol=0, atol=0)


def _fresh_backbone():
    torch.manual_seed(2)
    return build_backbone(NAME, **KWARGS)


def test_classifier_state_dict_file_round_trip(tmp_path):
    classifier = _trained_classifier()
    path = tmp_path / "classifier.pt"
    torch.save(classifier.state_dict(), path)
    backbone = _fresh_backbone()
    missing, unexpected = load_backbone_weights(backbone, path)
    assert missing == [] and unexpected == []
    _assert_same_features(backbone, classifier.backbone)


def test_lightning_checkpoint_round_trip(tmp_path):
    classifier = _trained_classifier()
    state = {f"model.{k}": v for k, v in classifier.state_dict().items()}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"backbone": NAME}}, path)
    backbone = _fresh_backbone()
    missing, unexpected = load_backbone_weights(backbone, path)
    assert missing == [] and unexpected == []
    _assert_same_features(backbone, classifier.backbone)


def test_plain_backbone_state_dict_round_trip_into_partial_backbone(tmp_path):
    classifier = _trained_classifier()
    path = tmp_path / "backbone.pt"
    torch.save(classifier.backbone.state_dict(), path)
    backbone = build_backbone(NAME, out_features=("C2", "C3"), **KWARGS)
    missing, unexpected = load_backbone_weights(backbone, path)
    assert missing == []
    assert unexpected and all(k.startswith(("layer3.", "layer4.")) for k in unexpected)
    reference = build_backbone(NAME, **KWARGS)
    reference.load_state_dict(classifier.backbone.state_dict())  # same weights, every feature returned
    reference.eval()
    x = torch.randn(1, 3, 37, 29)
    with torch.no_grad():
        full = reference(x)
        part = backbone.eval()(x)
    torch.testing.assert_close(part["C3"], full["C3"], rtol=0, atol=0)


def test_prefix_detection():
    keys = ["model.backbone.conv1.weight", "model.backbone.layer1.0.conv1.weight", "model.fc.weight"]
    assert find_backbone_prefix(keys, ["conv1.weight", "layer1.0.conv1.weight"]) == ("model.backbone.", 2)
    assert find_backbone_prefix(["conv1.weight"], ["conv1.weight"]) == ("", 1)
    assert find_backbone_prefix(["x.y"], ["conv1.weight"]) == ("", 0)


def test_nothing_matching_is_an_error():
    with pytest.raises(ValueError, match="no key of the weights matches"):
        load_backbone_weights(_fresh_backbone(), {"encoder.block.weight": torch.zeros(3)})


def test_shape_mismatch_is_an_error():
    other = build_backbone(NAME, base_width=32)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_backbone_weights(_fresh_backbone(), other.state_dict())


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_backbone_weights(_fresh_backbone(), tmp_path / "nope.pt")
