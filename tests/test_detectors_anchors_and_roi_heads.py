"""``model.anchor_sizes`` and the R-CNNs' RoI head widths (``model.box_head_fc_dim``, ``model.mask_head_conv_dim``):
what reaches torchvision's modules, the anchors themselves against boxes written out by hand, and the defaults
left exactly torchvision's."""

import pytest
import torch

from sasa_det.engine.tasks.detection import preset_detection_model
from tests.helpers import box_targets

SIZE = 64
RCNN_SMALL = {"rpn_post_nms_top_n_train": 32, "box_batch_size_per_image": 16}


def _model(arch, **options):
    small = RCNN_SMALL if arch != "retinanet" else {}
    return preset_detection_model(
        arch,
        2,
        backbone="resnet26",
        backbone_overrides={"base_width": 8},
        fpn_channels=32,
        min_size=SIZE,
        max_size=SIZE,
        detector_kwargs=small,
        **options,
    )


def _first_location_anchors(generator, strides, image_size=128):
    """The anchors of the first location (centre 0, 0) of the finest level for one image, ``[A, 4]`` xyxy."""
    grid = [torch.zeros(1, 32, image_size // s, image_size // s) for s in strides]

    class _Images:  # what AnchorGenerator reads of torchvision's ImageList
        tensors = torch.zeros(1, 3, image_size, image_size)
        image_sizes = [(image_size, image_size)]

    anchors = generator(_Images(), grid)[0]
    return anchors[: generator.num_anchors_per_location()[0]]


def test_retinanet_anchor_sizes_set_every_levels_octave_scales():
    model = _model("retinanet", anchor_sizes=[16, 32, 64, 128, 256])
    assert model.anchor_generator.sizes == ((16, 20, 25), (32, 40, 50), (64, 80, 101), (128, 161, 203), (256, 322, 406))
    # the first P3 location (centre 0, 0): size 16 at aspect ratios h/w 0.5, 1, 2, by hand:
    # w = 16 / sqrt(r), h = 16 * sqrt(r) -> (22.6, 11.3), (16, 16), (11.3, 22.6), boxes rounded to whole pixels
    by_hand = torch.tensor([[-11.0, -6.0, 11.0, 6.0], [-8.0, -8.0, 8.0, 8.0], [-6.0, -11.0, 6.0, 11.0]])
    anchors = _first_location_anchors(model.anchor_generator, (8, 16, 32, 64, 128))
    assert torch.equal(anchors[[0, 3, 6]], by_hand)  # torchvision orders them ratio-major, then scale


def test_default_anchors_are_torchvisions():
    assert _model("retinanet").anchor_generator.sizes == tuple(
        (s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512)
    )
    assert _model("faster_rcnn").rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))


def test_rpn_anchor_sizes_are_one_per_level():
    model = _model("faster_rcnn", anchor_sizes=[8, 16, 32, 64, 128])
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert model.rpn.head.cls_logits.out_channels == 3  # three aspect ratios per location
    # the first P2 location (stride 4): size 8 at aspect ratios h/w 0.5, 1, 2, by hand as above
    by_hand = torch.tensor([[-6.0, -3.0, 6.0, 3.0], [-4.0, -4.0, 4.0, 4.0], [-3.0, -6.0, 3.0, 6.0]])
    assert torch.equal(_first_location_anchors(model.rpn.anchor_generator, (4, 8, 16, 32, 64)), by_hand)


@pytest.mark.parametrize("sizes", [[16, 32, 64, 128], [16, 32, 64, 128, 0], [16, 32, 64, 128, 25.5]])
def test_bad_anchor_sizes_name_the_key_and_the_fix(sizes):
    with pytest.raises(ValueError, match=r"model.anchor_sizes must be 5 positive ints.*\[32, 64, 128, 256, 512\]"):
        _model("retinanet", anchor_sizes=sizes)


def test_roi_head_widths_reach_the_box_and_mask_heads_and_train():
    model = _model("mask_rcnn", box_head_fc_dim=48, mask_head_conv_dim=16)
    heads = model.roi_heads
    assert (heads.box_head.fc6.in_features, heads.box_head.fc6.out_features) == (32 * 7 * 7, 48)
    assert (heads.box_head.fc7.out_features, heads.box_predictor.cls_score.in_features) == (48, 48)
    assert heads.box_predictor.cls_score.out_features == 3 and heads.box_predictor.bbox_pred.out_features == 12
    convs = [m for m in heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(32, 16), (16, 16), (16, 16), (16, 16)]
    assert heads.mask_predictor.conv5_mask.out_channels == 16 and heads.mask_predictor.mask_fcn_logits.out_channels == 3
    wide = _model("mask_rcnn")
    assert set(model.state_dict()) == set(wide.state_dict())  # same modules by name, other widths
    images = [torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))]
    targets = box_targets([([[4, 6, 40, 44]], [1])], [(SIZE, SIZE)], True)
    model.train()
    losses = model(images, targets)
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_mask"}
    sum(losses.values()).backward()
    assert heads.mask_head[0][0].weight.grad is not None and torch.isfinite(sum(losses.values()))


def test_default_roi_heads_are_torchvisions_widths():
    heads = _model("mask_rcnn").roi_heads
    assert heads.box_head.fc6.out_features == 1024 and heads.box_predictor.cls_score.in_features == 1024
    assert heads.mask_predictor.conv5_mask.in_channels == 256
    faster = _model("faster_rcnn", box_head_fc_dim=64).roi_heads
    assert faster.box_head.fc7.out_features == 64 and faster.mask_head is None


@pytest.mark.parametrize("key", ["box_head_fc_dim", "mask_head_conv_dim"])
def test_bad_roi_head_widths_name_the_key(key):
    with pytest.raises(ValueError, match=f"model.{key} must be a positive int"):
        _model("mask_rcnn", **{key: 0})
