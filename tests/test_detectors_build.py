"""build_detector (through the engine's builder): every architecture over conv, SASA and AA backbones trains and
predicts; arguments and errors."""

import logging
import math

import pytest
import torch

from sasa_det.backbones import AAOptions, build_backbone
from sasa_det.detectors import AttentionFeaturePyramidNetwork, AttentionRetinaNetHead, DetectorOptions, build_detector
from sasa_det.engine.tasks.detection import preset_detection_model
from sasa_det.layers import SasaOptions
from tests.helpers import box_targets

# Tiny versions of the three backbone kinds (same code paths as the papers' networks, a fraction of the width).
TINY_BACKBONES = {
    "resnet26": {"base_width": 16},
    "sasa_resnet26": {"base_width": 16},
    "aa_resnet50": {"base_width": 16, "blocks_per_stage": (1, 1, 1, 1), "aa": AAOptions(heads=2)},
}
SIZE = 64
SHORT = 48
RCNN_SMALL = {
    "rpn_pre_nms_top_n_train": 64,
    "rpn_post_nms_top_n_train": 32,
    "rpn_pre_nms_top_n_test": 64,
    "rpn_post_nms_top_n_test": 16,
    "box_batch_size_per_image": 16,
    "box_score_thresh": 0.0,
    "box_detections_per_img": 5,
}
RETINANET_SMALL = {"score_thresh": 0.0, "topk_candidates": 20, "detections_per_img": 10}


def _batch(with_masks):
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, SIZE, SIZE, generator=gen), torch.rand(3, SHORT, SIZE, generator=gen)]
    boxes = [([[4, 6, 40, 44], [30, 30, 60, 62]], [1, 2]), ([[10, 8, 50, 40]], [2])]
    return images, box_targets(boxes, [(SIZE, SIZE), (SHORT, SIZE)], with_masks)


def _build(arch, backbone, fpn="conv", head="conv", **kwargs):
    small = RETINANET_SMALL if arch == "retinanet" else RCNN_SMALL
    return preset_detection_model(
        arch,
        2,
        backbone=backbone,
        backbone_overrides=TINY_BACKBONES[backbone],
        fpn=fpn,
        head=head,
        fpn_channels=32,
        min_size=SIZE,
        max_size=SIZE,
        detector_kwargs=small,
        sasa=SasaOptions(heads=4),
        **kwargs,
    )


def test_sasa_options_reach_every_sasa_layer():
    """One set of SASA options configures the backbone's, the attention pyramid's and the heads' layers."""
    from sasa_det.layers import LocalSelfAttention2d

    model = preset_detection_model(
        "retinanet",
        2,
        backbone="sasa_resnet26",
        backbone_overrides={"base_width": 16},
        fpn="attention",
        head="attention",
        fpn_channels=32,
        sasa=SasaOptions(heads=2, kernel_size=5, impl="halo", mask_padding=True),
    )
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LocalSelfAttention2d)}
    places = {name.split(".")[0] + "." + name.split(".")[1] for name in layers}
    assert {"backbone.body", "backbone.fpn", "head.classification_head", "head.regression_head"} <= places
    assert {(m.heads, m.kernel_size, m.impl, m.mask_padding) for m in layers.values()} == {(2, 5, "halo", True)}
    with pytest.raises(TypeError, match="kernal_size"):
        SasaOptions(kernal_size=5)


def _train_step_and_predict(model, arch):
    images, targets = _batch(with_masks=arch == "mask_rcnn")
    model.train()
    losses = model(images, targets)
    expected = (
        {"classification", "bbox_regression"}
        if arch == "retinanet"
        else {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    )
    if arch == "mask_rcnn":
        expected.add("loss_mask")
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # DDP needs every trainable parameter in the graph.
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    model.eval()
    with torch.no_grad():
        predictions = model(images)
    assert len(predictions) == 2
    for pred, height in zip(predictions, (SIZE, SHORT)):
        keys = {"boxes", "scores", "labels"} | ({"masks"} if arch == "mask_rcnn" else set())
        assert set(pred) == keys
        d = len(pred["scores"])
        assert d > 0 and pred["boxes"].shape == (d, 4) and pred["labels"].shape == (d,)
        assert pred["labels"].min() >= 1 and pred["labels"].max() <= 2
        assert (pred["boxes"][:, 2] <= SIZE).all() and (pred["boxes"][:, 3] <= height).all()
        if arch == "mask_rcnn":
            assert pred["masks"].shape == (d, 1, height, SIZE)
            assert pred["masks"].dtype == torch.float32
            assert 0 <= pred["masks"].min() and pred["masks"].max() <= 1


# The default run covers each architecture and each backbone kind and every attention part at least once;
# the full grid is slow.
DEFAULT_CASES = [
    ("retinanet", "resnet26", "conv", "conv"),
    ("retinanet", "sasa_resnet26", "attention", "attention"),
    ("faster_rcnn", "aa_resnet50", "conv", "conv"),
    ("mask_rcnn", "sasa_resnet26", "attention", "conv"),
]
ALL_CASES = [
    (arch, backbone, fpn, head)
    for arch in ("retinanet", "faster_rcnn", "mask_rcnn")
    for backbone in TINY_BACKBONES
    for fpn in ("conv", "attention")
    for head in (("conv", "attention") if arch == "retinanet" else ("conv",))
]


@pytest.mark.parametrize("arch,backbone,fpn,head", DEFAULT_CASES)
def test_detector_trains_and_predicts(arch, backbone, fpn, head):
    torch.manual_seed(0)
    model = _build(arch, backbone, fpn, head)
    assert isinstance(model.backbone.fpn, AttentionFeaturePyramidNetwork) == (fpn == "attention")
    if arch == "retinanet":
        assert isinstance(model.head, AttentionRetinaNetHead) == (head == "attention")
    _train_step_and_predict(model, arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch,backbone,fpn,head", [c for c in ALL_CASES if c not in DEFAULT_CASES])
def test_detector_trains_and_predicts_full_grid(arch, backbone, fpn, head):
    torch.manual_seed(0)
    _train_step_and_predict(_build(arch, backbone, fpn, head), arch)


@pytest.mark.parametrize(
    "arch,levels", [("retinanet", ["P3", "P4", "P5", "P6", "P7"]), ("mask_rcnn", ["P2", "P3", "P4", "P5", "P6"])]
)
def test_pyramid_levels_and_strides(arch, levels):
    model = _build(arch, "resnet26")
    with torch.no_grad():
        pyramid = model.backbone(torch.rand(1, 3, 96, 80))
    assert list(pyramid) == levels
    for name, p in pyramid.items():
        stride = 2 ** int(name[1:])
        assert p.shape == (1, 32, math.ceil(96 / stride), math.ceil(80 / stride))
    assert sorted(model.backbone.body.out_channels) == (
        ["C3", "C4", "C5"] if arch == "retinanet" else ["C2", "C3", "C4", "C5"]
    )


def test_class_counts_include_unused_background_index():
    tiny = {"backbone": "resnet26", "backbone_overrides": {"base_width": 8}, "fpn_channels": 32}
    retinanet = preset_detection_model("retinanet", 5, **tiny)
    assert retinanet.head.classification_head.num_classes == 6
    assert retinanet.head.classification_head.cls_logits.out_channels == 9 * 6
    mask_rcnn = preset_detection_model("mask_rcnn", 5, **tiny)
    assert mask_rcnn.roi_heads.box_predictor.cls_score.out_features == 6
    assert mask_rcnn.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 6


def test_retinanet_never_reports_class_zero():
    torch.manual_seed(0)
    model = _build("retinanet", "resnet26").eval()
    with torch.no_grad():
        bias = model.head.classification_head.cls_logits.bias
        bias.view(9, 3)[:, 0] = 10.0  # class 0 would win every anchor in torchvision's post-processing
        predictions = model(_batch(False)[0])
    assert all(len(p["labels"]) > 0 and (p["labels"] > 0).all() for p in predictions)


def test_arguments_reach_torchvision():
    model = preset_detection_model(
        "retinanet",
        3,
        backbone="resnet26",
        backbone_overrides={"base_width": 8},
        fpn_channels=32,
        min_size=[480, 512, 640],
        max_size=640,
        detector_kwargs={
            "score_thresh": 0.3,
            "nms_thresh": 0.6,
            "detections_per_img": 7,
            "topk_candidates": 11,
            "fg_iou_thresh": 0.55,
        },
    )
    assert (model.score_thresh, model.nms_thresh, model.detections_per_img, model.topk_candidates) == (0.3, 0.6, 7, 11)
    assert model.proposal_matcher.high_threshold == 0.55
    assert model.transform.min_size == (480, 512, 640) and model.transform.max_size == 640
    assert model.transform._skip_resize is True
    assert DetectorOptions(max_size=640).backbone_image_size() == 640  # what AA relative tables are sized for
    rcnn = preset_detection_model(
        "faster_rcnn",
        3,
        backbone="resnet26",
        backbone_overrides={"base_width": 8},
        fpn_channels=32,
        max_size=1333,
        detector_kwargs={"score_thresh": 0.25, "nms_thresh": 0.4, "detections_per_img": 9, "rpn_nms_thresh": 0.65},
    )
    assert (rcnn.roi_heads.score_thresh, rcnn.roi_heads.nms_thresh, rcnn.roi_heads.detections_per_img) == (0.25, 0.4, 9)
    assert rcnn.rpn.nms_thresh == 0.65
    assert DetectorOptions(max_size=1333).backbone_image_size() == 1344  # 1333 padded to a multiple of 32
    assert rcnn.transform.min_size == (800,)


def test_backbone_overrides_and_image_size_override():
    model = preset_detection_model(
        "retinanet",
        3,
        backbone="aa_resnet50",
        backbone_overrides={
            "base_width": 16,
            "blocks_per_stage": (1, 1, 1, 1),
            "aa": AAOptions(heads=2),
            "image_size": 320,
            "norm": "frozen_bn",
            "frozen_stages": 2,
        },
        fpn_channels=32,
        max_size=640,
    )
    body = model.backbone.body
    assert body.layer2[0].conv2.max_size == (40, 40)  # stage 2 (stride 8) of a 320-px input, not max_size's 640
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}


def test_backbone_weights_are_loaded_and_mismatches_logged(tmp_path, caplog):
    overrides = {"base_width": 8}
    torch.manual_seed(1)
    source = build_backbone("resnet26", **overrides)
    path = tmp_path / "backbone.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    model = preset_detection_model(
        "retinanet", 3, backbone="resnet26", backbone_overrides={**overrides, "weights": path}, fpn_channels=32
    )
    loaded = model.backbone.body.state_dict()
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(loaded[name], tensor)

    state = source.state_dict()
    state["fc.weight"] = torch.zeros(10, 256)
    del state["layer4.0.conv3.weight"]
    torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="sasa_det.backbones.presets"):
        preset_detection_model(
            "retinanet", 3, backbone="resnet26", backbone_overrides={**overrides, "weights": path}, fpn_channels=32
        )
    message = " ".join(r.getMessage() for r in caplog.records if r.name == "sasa_det.backbones.presets")
    assert "1 missing" in message and "layer4.0.conv3.weight" in message
    assert "1 unexpected" in message and "fc.weight" in message


@pytest.mark.parametrize(
    "head,head_norm,expect_group_norm",
    [
        ("conv", None, False),
        ("conv", "none", False),
        ("conv", "group", True),
        ("attention", None, True),
        ("attention", "none", False),
    ],
)
def test_head_norm_choice(head, head_norm, expect_group_norm):
    model = preset_detection_model(
        "retinanet",
        3,
        backbone="resnet26",
        backbone_overrides={"base_width": 8},
        fpn_channels=64,
        head=head,
        head_norm=head_norm,
    )
    for tower in (model.head.classification_head.conv, model.head.regression_head.conv):
        norms = [m for m in tower.modules() if isinstance(m, torch.nn.GroupNorm)]
        assert (len(norms) == 4) if expect_group_norm else not norms


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"arch": "yolo"}, "unknown arch 'yolo'"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.0}, "num_classes"),
        ({"fpn": "bifpn"}, "unknown fpn 'bifpn'"),
        ({"head": "mlp"}, "unknown head 'mlp'"),
        ({"arch": "mask_rcnn", "head": "attention"}, "head='attention' exists for arch='retinanet' only"),
        ({"fpn_channels": 0}, "fpn_channels"),
        ({"head_norm": "batch"}, "unknown head_norm 'batch'"),
        ({"head_norm": "group", "fpn_channels": 48}, "needs fpn_channels divisible by 32"),
        ({"arch": "faster_rcnn", "head_norm": "group"}, "head_norm exists for arch='retinanet' only"),
        ({"min_size": []}, "min_size"),
        ({"min_size": [800, -1]}, "min_size"),
        ({"min_size": "800"}, "min_size"),
        ({"max_size": 0}, "max_size"),
        ({"detector_kwargs": {"score_treshold": 0.1}}, r"unknown detector_kwargs \['score_treshold'\]"),
        ({"detector_kwargs": {"head": None}}, "set by build_detector's own arguments"),
        ({"arch": "faster_rcnn", "detector_kwargs": {"score_thresh": 0.1, "box_score_thresh": 0.2}}, "keep one"),
        ({"backbone": "vgg16"}, "unknown backbone 'vgg16'"),
    ],
)
def test_bad_arguments_are_rejected_with_clear_errors(kwargs, match):
    arguments = {
        "arch": "retinanet",
        "num_classes": 3,
        "backbone": "resnet26",
        "backbone_overrides": {"base_width": 8},
        "fpn_channels": 32,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        preset_detection_model(**arguments)


def test_a_backbone_without_the_architectures_features_is_rejected():
    backbone = build_backbone("resnet26", base_width=8, out_features=("C5",))
    with pytest.raises(ValueError, match=r"backbone has no feature\(s\) \['C3', 'C4'\]"):
        build_detector(DetectorOptions(fpn_channels=32), 3, backbone)


def _cross_class_iou(detections) -> float:
    """The largest IoU between two detections of different classes (0 when there is no such pair)."""
    from torchvision.ops import box_iou

    iou = box_iou(detections["boxes"], detections["boxes"])
    different = detections["labels"][:, None] != detections["labels"][None, :]
    return float(iou[different].max()) if different.any() else 0.0


@pytest.mark.parametrize("arch", ["retinanet", "faster_rcnn"])
def test_class_agnostic_nms_keeps_one_box_per_object_whatever_its_class(arch):
    from sasa_det.detectors.class_agnostic_nms import nms_threshold

    images = _batch(False)[0]
    outputs = {}
    for agnostic in (False, True):
        torch.manual_seed(0)
        model = _build(arch, "resnet26", class_agnostic_nms=agnostic).eval()
        with torch.no_grad():
            if arch == "retinanet":  # both foreground classes score high on every anchor
                model.head.classification_head.cls_logits.bias.view(9, 3)[:, 1:] = 5.0
            else:
                model.roi_heads.box_predictor.cls_score.bias[1:] = 5.0
            outputs[agnostic] = model(images)
    threshold = nms_threshold(model)
    assert max(_cross_class_iou(d) for d in outputs[False]) > threshold  # per-class NMS: one object, two labels
    assert sum(len(d["boxes"]) for d in outputs[True]) < sum(len(d["boxes"]) for d in outputs[False])
    for plain, agnostic in zip(outputs[False], outputs[True]):
        assert 0 < len(agnostic["boxes"]) <= len(plain["boxes"])
        assert _cross_class_iou(agnostic) <= threshold
        assert (agnostic["scores"][:-1] >= agnostic["scores"][1:]).all()


def test_class_agnostic_nms_of_one_image_keeps_the_best_box_and_its_mask():
    from sasa_det.detectors.class_agnostic_nms import class_agnostic_nms

    detections = {
        "boxes": torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float32),
        "scores": torch.tensor([0.53, 0.73, 0.4]),
        "labels": torch.tensor([2, 1, 2]),
        "masks": torch.arange(3).view(3, 1, 1, 1).float(),
    }
    kept = class_agnostic_nms(detections, 0.5)
    assert kept["labels"].tolist() == [1, 2] and kept["scores"].tolist() == pytest.approx([0.73, 0.4])
    assert kept["masks"].flatten().tolist() == [1.0, 2.0]
