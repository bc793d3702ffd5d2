"""Proof of no drift: our conv ResNet-50 detectors are torchvision's, parameter for parameter and output for output.

Two references per architecture:
- torchvision's own builder (``retinanet_resnet50_fpn`` / ``maskrcnn_resnet50_fpn``, v1, no weights): its state
  dict must load strictly into ours and give the same pyramid and head outputs (it uses BatchNorm2d, ours
  FrozenBatchNorm2d, so equality is up to float rounding);
- the same architecture assembled from torchvision's public pieces with FrozenBatchNorm2d and 3 trainable stages
  (what torchvision's builder does with a pre-trained backbone): identical detections and training losses, and
  the same trainable parameters.
"""

import pytest
import torch
from torch import nn
from torchvision.models.detection import MaskRCNN, RetinaNet, maskrcnn_resnet50_fpn, retinanet_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from sasa_det.engine.tasks.detection import preset_detection_model
from tests.helpers import box_targets

SIZE = 64
FROZEN_RESNET50 = {"norm": "frozen_bn", "frozen_stages": 1}


def _randomize_norm_statistics(model: nn.Module, seed: int = 0) -> None:
    """Give every norm layer non-trivial statistics/affine values, so a norm mismatch would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
                m.weight.copy_(0.5 + 0.5 * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


SHORT = 48  # the second image is SHORT x SIZE: batching pads it


def _images():
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(3, SIZE, SIZE, generator=gen), torch.rand(3, SHORT, SIZE, generator=gen)]


def _targets(with_masks: bool = False):
    boxes = [([[5, 10, 35, 45], [30, 2, 60, 25]], [3, 17]), ([[15, 15, 50, 40]], [90])]
    return box_targets(boxes, [(SIZE, SIZE), (SHORT, SIZE)], with_masks)


def _ours(arch: str, **options) -> nn.Module:
    """Our ``arch`` (90 COCO classes) on a ResNet-50 frozen as torchvision's builders freeze a pre-trained one."""
    return preset_detection_model(arch, 90, backbone="resnet50", backbone_overrides=FROZEN_RESNET50, **options)


def _trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _assert_same_detections(ours, reference, keys=("boxes", "scores", "labels")):
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert len(b["scores"]) > 0
        for key in keys:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_retinanet_resnet50_loads_torchvision_state_dict_and_matches_its_outputs():
    torch.manual_seed(0)
    reference = retinanet_resnet50_fpn(weights=None, weights_backbone=None, min_size=SIZE, max_size=SIZE).eval()
    _randomize_norm_statistics(reference)
    ours = _ours("retinanet", min_size=SIZE, max_size=SIZE).eval()
    assert set(ours.state_dict()) == set(reference.state_dict()) - {
        k for k in reference.state_dict() if k.endswith("num_batches_tracked")
    }
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours_pyramid = list(ours.backbone(x).values())
        ref_pyramid = list(reference.backbone(x).values())
        assert [p.shape for p in ours_pyramid] == [p.shape for p in ref_pyramid]
        assert [p.shape[-1] for p in ours_pyramid] == [-(-SIZE // s) for s in (8, 16, 32, 64, 128)]
        for a, b in zip(ours_pyramid, ref_pyramid):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
        ours_head, ref_head = ours.head(ref_pyramid), reference.head(ref_pyramid)
    assert ours_head["cls_logits"].shape == (2, 9 * sum((-(-SIZE // s)) ** 2 for s in (8, 16, 32, 64, 128)), 91)
    for key in ("cls_logits", "bbox_regression"):
        torch.testing.assert_close(ours_head[key], ref_head[key], rtol=0, atol=0)


RETINANET_SMALL = {"score_thresh": 0.2, "topk_candidates": 100, "detections_per_img": 50}


def _torchvision_retinanet_frozen() -> RetinaNet:
    body = resnet_fpn_backbone(
        backbone_name="resnet50",
        weights=None,
        norm_layer=FrozenBatchNorm2d,
        trainable_layers=3,
        returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256),
    )
    return RetinaNet(body, 91, min_size=SIZE, max_size=SIZE, _skip_resize=True, **RETINANET_SMALL)


def test_retinanet_resnet50_equals_torchvision_detections_and_losses():
    torch.manual_seed(0)
    reference = _torchvision_retinanet_frozen()
    _randomize_norm_statistics(reference)
    ours = _ours("retinanet", min_size=SIZE, max_size=SIZE, detector_kwargs=RETINANET_SMALL)
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert _trainable(ours) == _trainable(reference)
    assert not any(n.startswith(("backbone.body.conv1", "backbone.body.layer1")) for n in _trainable(ours))
    # Bias the class logits up so that random weights produce detections above the threshold; class 0 (never a
    # target: ours drops it from the detections, torchvision would not) stays far below it.
    with torch.no_grad():
        for model in (ours, reference):
            bias = model.head.classification_head.cls_logits.bias
            bias.fill_(-1.0)
            bias.view(9, 91)[:, 0] = -30.0

    ours.eval(), reference.eval()
    with torch.no_grad():
        _assert_same_detections(ours(_images()), reference(_images()))

    ours.train(), reference.train()
    ours_losses = ours(_images(), _targets())
    ref_losses = reference(_images(), _targets())
    assert set(ours_losses) == set(ref_losses) == {"classification", "bbox_regression"}
    for key in ref_losses:
        torch.testing.assert_close(ours_losses[key], ref_losses[key], rtol=0, atol=0)
    sum(ours_losses.values()).backward()
    sum(ref_losses.values()).backward()
    ours_params, ref_params = dict(ours.named_parameters()), dict(reference.named_parameters())
    for name in (
        "backbone.body.layer2.0.conv2.weight",
        "backbone.fpn.extra_blocks.p7.weight",
        "head.classification_head.cls_logits.weight",
        "head.regression_head.bbox_reg.bias",
    ):
        torch.testing.assert_close(ours_params[name].grad, ref_params[name].grad)


def _torchvision_mask_rcnn_frozen(**kwargs) -> MaskRCNN:
    body = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3)
    return MaskRCNN(body, 91, min_size=SIZE, max_size=SIZE, _skip_resize=True, **kwargs)


MASK_RCNN_SMALL = {
    "box_score_thresh": 0.0,
    "box_detections_per_img": 8,
    "rpn_pre_nms_top_n_test": 128,
    "rpn_post_nms_top_n_test": 32,
    "rpn_pre_nms_top_n_train": 128,
    "rpn_post_nms_top_n_train": 64,
    "box_batch_size_per_image": 32,
}


def test_mask_rcnn_resnet50_loads_torchvision_state_dict():
    torch.manual_seed(0)
    reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    ours = _ours("mask_rcnn")
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert ours.roi_heads.box_predictor.cls_score.out_features == 91


def test_mask_rcnn_resnet50_equals_torchvision_detections_masks_and_losses():
    torch.manual_seed(0)
    reference = _torchvision_mask_rcnn_frozen(**MASK_RCNN_SMALL)
    _randomize_norm_statistics(reference)
    ours = _ours("mask_rcnn", min_size=SIZE, max_size=SIZE, detector_kwargs=MASK_RCNN_SMALL)
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert _trainable(ours) == _trainable(reference)

    ours.eval(), reference.eval()
    with torch.no_grad():
        ours_out, ref_out = ours(_images()), reference(_images())
    _assert_same_detections(ours_out, ref_out, keys=("boxes", "scores", "labels", "masks"))
    assert ours_out[1]["masks"].shape == (len(ours_out[1]["scores"]), 1, SHORT, SIZE)

    ours.train(), reference.train()
    torch.manual_seed(3)  # the RPN and RoI samplers draw random subsets: same seed, same draw
    ours_losses = ours(_images(), _targets(with_masks=True))
    torch.manual_seed(3)
    ref_losses = reference(_images(), _targets(with_masks=True))
    assert (
        set(ours_losses)
        == set(ref_losses)
        == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    )
    for key in ref_losses:
        torch.testing.assert_close(ours_losses[key], ref_losses[key], rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["retinanet", "mask_rcnn"])
def test_parameter_names_follow_torchvision_layout(arch):
    model = preset_detection_model(arch, 3, backbone="resnet26", backbone_overrides={"base_width": 8}, fpn_channels=32)
    prefixes = {".".join(name.split(".")[:2]) for name in model.state_dict() if name.startswith("backbone.")}
    assert prefixes == {"backbone.body", "backbone.fpn"}
