"""Backbone weights round-trip through classifier state dicts, Lightning-style checkpoints and plain files."""

import logging

import pytest
import torch

from sasa_det.backbones import AAOptions, build_backbone, build_classifier, load_backbone_weights
from sasa_det.backbones.weights import find_backbone_prefix
from sasa_det.layers.relative_position import slice_relative_table

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


def _assert_loads_whole_into_a_fresh_backbone(path, source) -> None:
    backbone = _fresh_backbone()
    missing, unexpected = load_backbone_weights(backbone, path)
    assert missing == [] and unexpected == []
    _assert_same_features(backbone, source)


def test_classifier_state_dict_file_round_trip(tmp_path):
    classifier = _trained_classifier()
    path = tmp_path / "classifier.pt"
    torch.save(classifier.state_dict(), path)
    _assert_loads_whole_into_a_fresh_backbone(path, classifier.backbone)


def test_lightning_checkpoint_round_trip(tmp_path):
    classifier = _trained_classifier()
    state = {f"model.{k}": v for k, v in classifier.state_dict().items()}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"backbone": NAME}}, path)
    _assert_loads_whole_into_a_fresh_backbone(path, classifier.backbone)


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
    with pytest.raises(ValueError, match="nope.pt: no such file"):
        load_backbone_weights(_fresh_backbone(), tmp_path / "nope.pt")


AA_NAME = "aa_resnet50"
AA_KWARGS = {"base_width": 16, "blocks_per_stage": (1, 1, 1, 1), "aa": AAOptions(heads=2)}
RELATIVE_KEYS = [f"layer{stage}.0.conv2.{table}" for stage in (2, 3, 4) for table in ("rel_width", "rel_height")]


def _aa_backbone(image_size, seed):
    torch.manual_seed(seed)
    backbone = build_backbone(AA_NAME, image_size=image_size, **AA_KWARGS)
    with torch.no_grad():  # non-trivial BN statistics so that eval-mode outputs depend on every tensor
        for tensor in list(backbone.parameters()) + [b for b in backbone.buffers() if b.is_floating_point()]:
            tensor.add_(torch.randn_like(tensor) * 0.02)
    return backbone.eval()


def _reference_resize(table, length):
    """Explicit per-entry reference: offset o of the result, o in -(L-1)..L-1, from the source's offsets."""
    source_half = (table.shape[0] + 1) // 2
    rows = []
    for offset in range(-(length - 1), length):
        if length <= source_half:  # the very same offset of the source
            rows.append(table[offset + source_half - 1])
        else:  # linear interpolation, the outermost offsets on the outermost source entries
            position = (offset + length - 1) * (table.shape[0] - 1) / (2 * length - 2)
            low = int(position)
            high = min(low + 1, table.shape[0] - 1)
            weight = position - low
            rows.append((1 - weight) * table[low] + weight * table[high])
    return torch.stack(rows)


@pytest.mark.parametrize("source_size,target_size", [(64, 256), (256, 64)])
def test_aa_relative_tables_resized_to_the_target_backbone(source_size, target_size, caplog):
    source = _aa_backbone(source_size, seed=3)
    target = _aa_backbone(target_size, seed=4)
    source_state = source.state_dict()
    assert all(source_state[k].shape[0] != target.state_dict()[k].shape[0] for k in RELATIVE_KEYS)
    with caplog.at_level(logging.INFO, logger="sasa_det.backbones.weights"):
        missing, unexpected = load_backbone_weights(target, source_state)
    assert missing == [] and unexpected == []
    assert sum("resized aa position table" in record.getMessage() for record in caplog.records) == len(RELATIVE_KEYS)
    loaded = target.state_dict()
    for key, tensor in source_state.items():
        if key in RELATIVE_KEYS:
            length = (loaded[key].shape[0] + 1) // 2
            torch.testing.assert_close(loaded[key], slice_relative_table(tensor, length), rtol=0, atol=0)
            torch.testing.assert_close(loaded[key], _reference_resize(tensor, length))
        else:
            torch.testing.assert_close(loaded[key], tensor, rtol=0, atol=0)


def test_aa_backbone_with_smaller_tables_computes_the_same_features():
    """A 64-px input fits both backbones' tables; the centre slice keeps every offset it uses exactly."""
    source = _aa_backbone(256, seed=3)
    target = _aa_backbone(64, seed=4)
    load_backbone_weights(target, source.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = source(x), target(x)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0)


def test_aa_relative_table_with_other_depth_is_an_error():
    state = _aa_backbone(64, seed=3).state_dict()
    key = "layer2.0.conv2.rel_width"
    state[key] = torch.zeros(state[key].shape[0], state[key].shape[1] + 1)
    with pytest.raises(ValueError, match=f"shape mismatch.*{key}"):
        load_backbone_weights(_aa_backbone(64, seed=4), state)


def test_non_relative_mismatch_in_aa_backbone_is_still_an_error():
    other = build_backbone(AA_NAME, image_size=256, **{**AA_KWARGS, "base_width": 32})
    with pytest.raises(ValueError, match="shape mismatch"):
        load_backbone_weights(_aa_backbone(64, seed=4), other.state_dict())
