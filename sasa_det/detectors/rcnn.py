"""Faster R-CNN and Mask R-CNN (torchvision's models) on a P2–P6 pyramid over any of our backbones.

With a conv ResNet-50 and ``fpn="conv"`` these are torchvision's ``fasterrcnn_resnet50_fpn`` /
``maskrcnn_resnet50_fpn`` (v1) layer for layer: backbone features C2–C5, a 256-channel FPN whose extra level P6 is
P5 subsampled by 2 (``LastLevelMaxPool``, used by the RPN only), torchvision's RPN, RoI heads, losses and
post-processing; their state dicts load into ours by name. RoIs are pooled from P2–P5 (``MultiScaleRoIAlign``,
7×7 for boxes, 14×14 for masks, sampling ratio 2, as torchvision).
"""

from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNN
from torchvision.ops import MultiScaleRoIAlign

from sasa_det.detectors.backbone_with_fpn import backbone_with_fpn
from sasa_det.detectors.options import RCNN_FEATURES
from sasa_det.layers import LocalSelfAttention2d

ROI_LEVELS = ["P2", "P3", "P4", "P5"]  # pyramid levels RoIs are pooled from (P6 feeds the RPN only)


def rcnn_from_backbone(
    body: nn.Module,
    num_classes: int,
    with_masks: bool = False,
    fpn: str = "conv",
    fpn_channels: int = 256,
    attention_layer: Callable[..., nn.Module] = LocalSelfAttention2d,
    **rcnn_kwargs: Any,
) -> FasterRCNN:
    """torchvision ``FasterRCNN``, or ``MaskRCNN`` with ``with_masks``, over ``body`` (which must return C2–C5)
    with a P2–P6 pyramid; RoIs are pooled 7×7 for boxes and 14×14 for masks (sampling ratio 2).

    Args:
        body: backbone returning ``OrderedDict`` C2–C5 with ``out_channels``.
        num_classes: torchvision's class count, i.e. foreground classes + 1 (index 0 = background).
        with_masks: Mask R-CNN (a mask head) instead of Faster R-CNN.
        fpn: ``"conv"`` or ``"attention"`` (3×3 output convs of the pyramid are attention layers).
        fpn_channels: channels of the pyramid.
        attention_layer: makes the attention pyramid's layers (default: the SASA layer with the paper's values).
        **rcnn_kwargs: passed to torchvision's class (``min_size``, ``box_score_thresh``, ...).

    Returns the model: train mode ``model(images, targets) -> {"loss_classifier", "loss_box_reg",
    "loss_objectness", "loss_rpn_box_reg"}`` (Mask R-CNN adds ``"loss_mask"``; targets need ``masks``
    ``[N_i, H, W]`` uint8); eval mode ``model(images) -> [{"boxes", "scores", "labels"}]`` (Mask R-CNN adds
    ``"masks" [D, 1, H, W]``, probabilities in the input image's size).
    """
    backbone = backbone_with_fpn(body, list(RCNN_FEATURES), fpn, fpn_channels, "maxpool", attention_layer)
    pools = {"box_roi_pool": MultiScaleRoIAlign(featmap_names=ROI_LEVELS, output_size=7, sampling_ratio=2)}
    if not with_masks:
        return FasterRCNN(backbone, num_classes, **pools, **rcnn_kwargs)
    pools["mask_roi_pool"] = MultiScaleRoIAlign(featmap_names=ROI_LEVELS, output_size=14, sampling_ratio=2)
    return MaskRCNN(backbone, num_classes, **pools, **rcnn_kwargs)
