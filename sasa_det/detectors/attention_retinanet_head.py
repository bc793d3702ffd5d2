"""RetinaNet classification and box heads built from stand-alone self-attention layers.

SASA paper (Ramachandran et al. 2019), Sec. 4.2 / Table 2 "Attention" rows: every 3×3 convolution of the heads
becomes a local self-attention layer (k = 7, 8 heads, d = 256), the heads are shared across pyramid levels, "a
pointwise convolution at the end of the class and box heads" mixes the attention heads, and the value matrices
of the heads' attention layers are initialised N(0, 0.01).

The modules subclass torchvision's ``RetinaNetClassificationHead`` / ``RetinaNetRegressionHead`` and only swap
their layers (``conv`` tower and ``cls_logits`` / ``bbox_reg`` predictor), so the forward (the reshape to
``(N, HWA, K)``), the focal / L1 losses and RetinaNet's post-processing are torchvision's.

Where the paper is silent, what we chose:
- The pointwise conv is the predictor itself: a 1×1 conv from ``d`` to ``A·K`` (class) or ``A·4`` (box)
  outputs, with bias; torchvision's 3×3 predictor conv is not kept.
- A ReLU follows every attention layer of the towers (as the conv towers of RetinaNet).
- Normalisation: the paper does not say. torchvision's v1 conv heads have none; the TPU RetinaNet the paper's
  numbers come from normalises after every head conv. With the paper's value init N(0, 0.01) an un-normalised
  four-layer attention tower shrinks its input by about ``0.01·sqrt(d) = 0.16`` per layer, so by default we put
  a GroupNorm (32 groups, shared across levels like the layers, as torchvision's RetinaNet v2 heads) after each
  attention layer; ``norm="none"`` gives the plain tower. GroupNorm needs more than one value per group, so
  with 32-channel heads a single image's 1×1 level (P7 of an input under 129 px) cannot be normalised; use at
  least 64 channels (the paper's 256 has 8 per group).
- Query/key projections and relative embeddings keep ``LocalSelfAttention2d``'s own initialisation; the
  predictors are initialised as torchvision's (weights N(0, 0.01); class bias ``-log((1 - π) / π)`` with prior
  π = 0.01, box bias 0).
"""

import math
from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.models.detection.retinanet import (
    RetinaNetClassificationHead,
    RetinaNetHead,
    RetinaNetRegressionHead,
)

from sasa_det.detectors.attention_input_norm import attention_core
from sasa_det.detectors.options import HEAD_NORMS
from sasa_det.layers import LocalSelfAttention2d

GROUP_NORM_GROUPS = 32  # as torchvision's RetinaNet v2 heads


def attention_tower(
    channels: int,
    num_layers: int = 4,
    attention_layer: Callable[..., nn.Module] = LocalSelfAttention2d,
    norm: str = "group",
    value_init_std: float = 0.01,
) -> nn.Sequential:
    """``num_layers`` blocks ``[attention_layer(channels → channels), (GroupNorm), ReLU]``.

    ``[N, channels, H, W]`` → ``[N, channels, H, W]``. Block ``i`` is ``tower[i]``; its attention is
    ``tower[i][0]`` (or that layer's ``attention`` when the factory normalises inputs), whose value projection is
    initialised N(0, ``value_init_std``).
    """
    if norm not in HEAD_NORMS:
        raise ValueError(f"unknown head norm {norm!r}; choose one of {HEAD_NORMS}")
    if norm == "group" and channels % GROUP_NORM_GROUPS != 0:
        raise ValueError(
            f"head norm 'group' needs channels divisible by {GROUP_NORM_GROUPS}, got {channels}; "
            "change the FPN channels or use norm='none'"
        )
    blocks = []
    for _ in range(num_layers):
        attention = attention_layer(channels, channels)
        nn.init.normal_(attention_core(attention).value.weight, std=value_init_std)
        layers: list[nn.Module] = [attention]
        if norm == "group":
            layers.append(nn.GroupNorm(GROUP_NORM_GROUPS, channels))
        # in place only after the norm: the attention's output may be a view made inside its custom autograd
        # Function (the CPU and Triton kernels), which autograd forbids modifying in place
        layers.append(nn.ReLU(inplace=norm == "group"))
        blocks.append(nn.Sequential(*layers))
    return nn.Sequential(*blocks)


class AttentionRetinaNetClassificationHead(RetinaNetClassificationHead):
    """Classification head: attention tower + pointwise predictor; shared across levels.

    Args:
        in_channels: pyramid channels ``d``.
        num_anchors: anchors per location ``A``.
        num_classes: classes ``K`` of torchvision's RetinaNet (including the unused background index 0).
        attention_layer: ``attention_layer(d, d)`` makes each attention layer of the tower (default: the SASA
            layer with the paper's values, Sec. 4.2: k = 7, 8 heads; pass e.g. ``SasaOptions(...).factory()``).
        num_layers: attention layers in the tower (RetinaNet: 4).
        norm: ``"group"`` or ``"none"`` after each attention layer (paper silent; see module docstring).
        prior_probability: initial foreground probability of every logit (RetinaNet: 0.01).
        value_init_std: std of the value projections' init (SASA paper, Sec. 4.2: 0.01).

    Forward: list of pyramid levels ``[N, d, H_l, W_l]`` → logits ``[N, Σ_l H_l·W_l·A, K]``.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        attention_layer: Callable[..., nn.Module] = LocalSelfAttention2d,  # SASA paper, Sec. 4.2: k = 7, 8 heads
        num_layers: int = 4,  # RetinaNet (Lin et al. 2017): four layers per head
        norm: str = "group",  # paper silent; see module docstring
        prior_probability: float = 0.01,  # RetinaNet prior π
        value_init_std: float = 0.01,  # SASA paper, Sec. 4.2: W_V ~ N(0, 0.01)
    ) -> None:
        super().__init__(in_channels, num_anchors, num_classes, prior_probability=prior_probability)
        self.conv = attention_tower(in_channels, num_layers, attention_layer, norm, value_init_std)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, kernel_size=1)
        nn.init.normal_(self.cls_logits.weight, std=0.01)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))


class AttentionRetinaNetRegressionHead(RetinaNetRegressionHead):
    """Box head: attention tower + pointwise predictor; shared across levels.

    Args: as :class:`AttentionRetinaNetClassificationHead` without the class arguments.

    Forward: list of pyramid levels ``[N, d, H_l, W_l]`` → box deltas ``[N, Σ_l H_l·W_l·A, 4]``.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        attention_layer: Callable[..., nn.Module] = LocalSelfAttention2d,  # SASA paper, Sec. 4.2: k = 7, 8 heads
        num_layers: int = 4,  # RetinaNet (Lin et al. 2017)
        norm: str = "group",  # paper silent; see module docstring
        value_init_std: float = 0.01,  # SASA paper, Sec. 4.2
    ) -> None:
        super().__init__(in_channels, num_anchors)
        self.conv = attention_tower(in_channels, num_layers, attention_layer, norm, value_init_std)
        self.bbox_reg = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)
        nn.init.normal_(self.bbox_reg.weight, std=0.01)
        nn.init.zeros_(self.bbox_reg.bias)


class AttentionRetinaNetHead(RetinaNetHead):
    """torchvision's ``RetinaNetHead`` (losses, output dict) over the two attention heads.

    ``options`` (``attention_layer``, ``num_layers``, ``norm``, ``value_init_std``, and the class head's
    ``prior_probability``) go to both heads, with the defaults of :class:`AttentionRetinaNetClassificationHead`.

    Forward: list of pyramid levels ``[N, d, H_l, W_l]`` → ``{"cls_logits": [N, HWA, K],
    "bbox_regression": [N, HWA, 4]}``.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, **options: Any) -> None:
        nn.Module.__init__(self)  # RetinaNetHead.__init__ would build (and discard) the conv heads
        self.classification_head = AttentionRetinaNetClassificationHead(
            in_channels, num_anchors, num_classes, **options
        )
        options.pop("prior_probability", None)
        self.regression_head = AttentionRetinaNetRegressionHead(in_channels, num_anchors, **options)
