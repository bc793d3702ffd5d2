"""RetinaNet (Lin et al. 2017) on P3–P7 over any of our backbones: torchvision's model, our backbone and pyramid.

With a conv ResNet-50, ``fpn="conv"`` and ``head="conv"`` the model is torchvision's ``retinanet_resnet50_fpn``
(v1) layer for layer: backbone features C3–C5, a 256-channel FPN with P6 from P5 and P7 from ReLU(P6)
(``LastLevelP6P7(256, 256)``), torchvision's anchors (sizes 32–512 × {2^0, 2^1/3, 2^2/3}, ratios 0.5/1/2),
heads (four 3×3 conv + ReLU layers shared across levels, no normalisation), sigmoid focal loss, L1 box loss and
post-processing; its state dict loads into ours by name. ``fpn="attention"`` / ``head="attention"`` swap in the
SASA paper's attention pyramid and heads.
"""

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead

from sasa_det.detectors.attention_retinanet_head import GROUP_NORM_GROUPS, AttentionRetinaNetHead
from sasa_det.detectors.backbone_with_fpn import backbone_with_fpn
from sasa_det.detectors.options import HEAD_KINDS, HEAD_NORMS, RETINANET_FEATURES
from sasa_det.layers import LocalSelfAttention2d


class ForegroundRetinaNet(RetinaNet):
    """torchvision's ``RetinaNet`` that never reports class index 0.

    Our labels are 1..K and the model has ``K + 1`` sigmoid outputs to keep torchvision's layout; index 0 is
    never a training target (its logits only learn "no object"), but torchvision's post-processing would still
    report it when its score passed ``score_thresh``. Here its scores are set to 0 before post-processing, so
    detections are exactly torchvision's with class 0 removed before the per-level top-k. Training is unchanged.
    """

    def postprocess_detections(
        self, head_outputs: dict[str, list[Tensor]], anchors: list[list[Tensor]], image_shapes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """torchvision's post-processing with the class-0 logits (``[N, HWA_l, K + 1]`` per level) set to -inf."""
        cls_logits = []
        for logits in head_outputs["cls_logits"]:
            logits = logits.clone()
            logits[..., 0] = -torch.inf
            cls_logits.append(logits)
        return super().postprocess_detections({**head_outputs, "cls_logits": cls_logits}, anchors, image_shapes)


def retinanet_from_backbone(
    body: nn.Module,
    num_classes: int,
    fpn: str = "conv",
    head: str = "conv",
    fpn_channels: int = 256,
    head_norm: str | None = None,
    attention_layer: Callable[..., nn.Module] = LocalSelfAttention2d,
    head_value_init_std: float = 0.01,
    **retinanet_kwargs: Any,
) -> ForegroundRetinaNet:
    """:class:`ForegroundRetinaNet` (torchvision's ``RetinaNet``) over ``body`` with a P3–P7 pyramid.

    Args:
        body: backbone returning ``OrderedDict`` C3–C5 with ``out_channels`` (see :func:`backbone_with_fpn`).
        num_classes: torchvision's class count, i.e. foreground classes + 1 (index 0 is never a target).
        fpn: ``"conv"`` or ``"attention"`` (:class:`AttentionFeaturePyramidNetwork`).
        head: ``"conv"`` (torchvision's ``RetinaNetHead``) or ``"attention"`` (:class:`AttentionRetinaNetHead`).
        fpn_channels: channels of the pyramid and of the heads.
        head_norm: normalisation after each 3×3 layer of the heads' towers: ``"none"`` or ``"group"``
            (GroupNorm, 32 groups; torchvision's v2 RetinaNet head). ``None`` takes each head's default:
            none for the conv head (torchvision's v1 ``retinanet_resnet50_fpn``), group for the attention head.
        attention_layer: ``attention_layer(in_channels, out_channels, stride=1)`` makes every attention layer of
            the attention pyramid and heads (default: the SASA layer with the paper's values).
        head_value_init_std: std of the attention heads' value projections at init (SASA paper Sec. 4.2: 0.01).
        **retinanet_kwargs: passed to torchvision's ``RetinaNet`` (``min_size``, ``max_size``, ``score_thresh``,
            ``nms_thresh``, ``detections_per_img``, ``topk_candidates``, ``fg_iou_thresh``, ``_skip_resize``, ...).

    Returns the model: train mode ``model(images, targets) -> {"classification", "bbox_regression"}``; eval mode
    ``model(images) -> [{"boxes" [D, 4], "scores" [D], "labels" [D] in 1..num_classes-1}]`` in the input images'
    coordinates.
    """
    if head not in HEAD_KINDS:
        raise ValueError(f"unknown head {head!r}; choose one of {HEAD_KINDS}")
    backbone = backbone_with_fpn(body, list(RETINANET_FEATURES), fpn, fpn_channels, "p6p7", attention_layer)
    if head_norm is not None and head_norm not in HEAD_NORMS:
        raise ValueError(f"unknown head_norm {head_norm!r}; choose one of {HEAD_NORMS} or None")
    model = ForegroundRetinaNet(backbone, num_classes, **retinanet_kwargs)
    num_anchors = model.anchor_generator.num_anchors_per_location()[0]
    if head == "attention":
        model.head = AttentionRetinaNetHead(
            fpn_channels,
            num_anchors,
            num_classes,
            attention_layer=attention_layer,
            norm=head_norm or "group",
            value_init_std=head_value_init_std,
        )
    elif head_norm == "group":
        # torchvision's v2 head: GroupNorm(32) after every tower conv; trains much faster from scratch.
        if fpn_channels % GROUP_NORM_GROUPS != 0:
            raise ValueError(
                f"head_norm='group' needs fpn_channels divisible by {GROUP_NORM_GROUPS}, got {fpn_channels}; "
                "change model.fpn_channels or use head_norm='none'"
            )
        norm_layer = functools.partial(nn.GroupNorm, GROUP_NORM_GROUPS)
        model.head = RetinaNetHead(fpn_channels, num_anchors, num_classes, norm_layer=norm_layer)
    return model
