"""Faster R-CNN and Mask R-CNN (torchvision's models) on a P2–P6 pyramid over any of our backbones.

With a conv ResNet-50 and ``fpn="conv"`` these are torchvision's ``fasterrcnn_resnet50_fpn`` /
``maskrcnn_resnet50_fpn`` (v1) layer for layer: backbone features C2–C5, a 256-channel FPN whose extra level P6 is
P5 subsampled by 2 (``LastLevelMaxPool``, used by the RPN only), torchvision's RPN, RoI heads, losses and
post-processing; their state dicts load into ours by name. RoIs are pooled from P2–P5 (``MultiScaleRoIAlign``,
7×7 for boxes, 14×14 for masks, sampling ratio 2, as torchvision).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from torch import nn
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from sasa_det.detectors.backbone_with_fpn import backbone_with_fpn
from sasa_det.detectors.options import RCNN_FEATURES
from sasa_det.layers import LocalSelfAttention2d

ROI_LEVELS = ["P2", "P3", "P4", "P5"]  # pyramid levels RoIs are pooled from (P6 feeds the RPN only)
BOX_POOL, MASK_POOL = 7, 14  # RoIAlign output sides, as torchvision


class RoiHeadWidths(NamedTuple):
    """Widths of the RoI heads; the defaults are torchvision's (a CPU-sized model scales them with its FPN)."""

    #: the box head's two fully connected layers (``TwoMLPHead``) and the box predictor's input
    box_fc_dim: int = 1024
    #: the mask head's four 3x3 convs (``MaskRCNNHeads``) and the mask predictor's transposed conv
    mask_conv_dim: int = 256


TORCHVISION_ROI_HEAD_WIDTHS = RoiHeadWidths()


def _roi_heads(channels: int, num_classes: int, widths: RoiHeadWidths, with_masks: bool) -> dict[str, nn.Module]:
    """The RoI heads and predictors torchvision's class would build, at ``widths`` (its ``num_classes`` must
    then be ``None``); empty at torchvision's widths, so that the default model is built by torchvision itself
    (same modules, same order of random initialisation)."""
    default = TORCHVISION_ROI_HEAD_WIDTHS
    if widths == default or (not with_masks and widths.box_fc_dim == default.box_fc_dim):
        return {}
    heads: dict[str, nn.Module] = {
        "box_head": TwoMLPHead(channels * BOX_POOL**2, widths.box_fc_dim),
        "box_predictor": FastRCNNPredictor(widths.box_fc_dim, num_classes),
    }
    if with_masks:
        dim = widths.mask_conv_dim
        heads["mask_head"] = MaskRCNNHeads(channels, (dim,) * 4, 1)
        heads["mask_predictor"] = MaskRCNNPredictor(dim, dim, num_classes)
    return heads


def rcnn_from_backbone(
    body: nn.Module,
    num_classes: int,
    with_masks: bool = False,
    fpn: str = "conv",
    fpn_channels: int = 256,
    attention_layer: Callable[..., nn.Module] = LocalSelfAttention2d,
    roi_head_widths: RoiHeadWidths = TORCHVISION_ROI_HEAD_WIDTHS,
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
        roi_head_widths: the box head's and mask head's widths (default: torchvision's 1024 and 256).
        **rcnn_kwargs: passed to torchvision's class (``min_size``, ``box_score_thresh``, ...).

    Returns the model: train mode ``model(images, targets) -> {"loss_classifier", "loss_box_reg",
    "loss_objectness", "loss_rpn_box_reg"}`` (Mask R-CNN adds ``"loss_mask"``; targets need ``masks``
    ``[N_i, H, W]`` uint8); eval mode ``model(images) -> [{"boxes", "scores", "labels"}]`` (Mask R-CNN adds
    ``"masks" [D, 1, H, W]``, probabilities in the input image's size).
    """
    backbone = backbone_with_fpn(body, list(RCNN_FEATURES), fpn, fpn_channels, "maxpool", attention_layer)
    heads = _roi_heads(fpn_channels, num_classes, roi_head_widths, with_masks)
    pools = {"box_roi_pool": MultiScaleRoIAlign(featmap_names=ROI_LEVELS, output_size=BOX_POOL, sampling_ratio=2)}
    classes = None if heads else num_classes  # torchvision takes the count from the predictors given
    if not with_masks:
        return FasterRCNN(backbone, classes, **pools, **heads, **rcnn_kwargs)
    pools["mask_roi_pool"] = MultiScaleRoIAlign(featmap_names=ROI_LEVELS, output_size=MASK_POOL, sampling_ratio=2)
    return MaskRCNN(backbone, classes, **pools, **heads, **rcnn_kwargs)
