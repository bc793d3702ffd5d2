"""Parameter and FLOP counts of models with attention layers, and the papers' reference values.

FLOPs count a multiply-add as 2 (both papers' convention) for one forward pass:

* convolutions (every ``aten.convolution``, including the 1x1 projections inside attention layers)
  and ``nn.Linear`` layers, measured with :class:`torch.utils.flop_counter.FlopCounterMode`;
* plus, for every attention layer (:class:`~sasa_det.layers.attention_layer.AttentionLayer`), its
  ``attention_flops(H, W)`` (the products that are not convolutions: q.k, q.r, the softmax-weighted sum of
  values, value mixing), evaluated at the input size the layer actually saw, once per image and per call.

Other operations (normalization, activations, pooling, softmax, additions) are not counted, as in the
papers. Matrix products inside attention layers are deliberately *not* taken from the counter, so they
are not counted twice.

Known difference from the published values: the AA-ResNets. Replacing a ``F -> F`` 3x3 convolution by
an augmented one changes the parameters by ``F^2 (2 kappa + upsilon + upsilon^2 - 9 upsilon)`` (AA paper
Sec. 3.3; -0.39 F^2 for kappa=0.2, upsilon=0.1) plus the small relative tables, i.e. the AA-ResNets built
as the paper describes are *smaller* than the ResNets (25.11 / 43.70 / 59.00 M for 50 / 101 / 152),
while the AA paper's table lists 25.8 / 45.4 / 61.6 M, *larger* than the ResNets. No reading of the
text that keeps kappa=0.2, upsilon=0.1 and one augmented 3x3 per block reproduces those numbers, so the
architecture follows the text and the difference is reported, not tuned away.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sasa_det.layers.attention_layer import AttentionLayer

__all__ = [
    "ATTENTION_LAYERS",
    "PAPER_VALUES",
    "FlopCount",
    "ModelInfo",
    "count_flops",
    "count_parameters",
    "format_table",
    "measure_backbone",
]

#: What :func:`count_flops` counts as an attention layer by default: every module that implements the protocol.
ATTENTION_LAYERS: tuple[type, ...] = (AttentionLayer,)

# Published values at 224x224 with a 1000-class head: (parameters in millions, FLOPs in billions or None).
# SASA paper Table 1 (ResNet-26/38/50 baseline, conv-stem + attention, full attention);
# AA paper Table 2 (AA-ResNet-50/101/152, kappa=0.2, upsilon=0.1, N_h=8); He et al. 2016 for ResNet-101/152.
PAPER_VALUES: dict[str, tuple[float, float | None]] = {
    "resnet26": (13.7, 4.7),
    "resnet38": (19.6, 6.5),
    "resnet50": (25.6, 8.2),
    "resnet101": (44.5, None),
    "resnet152": (60.2, None),
    "sasa_resnet26": (10.3, 4.7),
    "sasa_resnet38": (14.1, 6.0),
    "sasa_resnet50": (18.0, 7.2),
    "sasa_resnet26_convstem": (10.3, 4.5),
    "sasa_resnet38_convstem": (14.1, 5.7),
    "sasa_resnet50_convstem": (18.0, 7.0),
    "aa_resnet50": (25.8, None),
    "aa_resnet101": (45.4, None),
    "aa_resnet152": (61.6, None),
}


@dataclass(frozen=True)
class FlopCount:
    """FLOPs (multiply-add = 2) of one forward pass, split by origin."""

    conv: int
    linear: int
    attention: int

    @property
    def total(self) -> int:
        """All counted FLOPs."""
        return self.conv + self.linear + self.attention


@dataclass(frozen=True)
class ModelInfo:
    """Size of a named model at one input size, with the published values when known."""

    name: str
    params: int
    flops: FlopCount
    image_size: int
    paper_params_m: float | None = None
    paper_flops_b: float | None = None


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _outermost_attention_layers(model: nn.Module, types: tuple[type, ...]) -> list[nn.Module]:
    found: list[nn.Module] = []
    inner: set[int] = set()
    for module in model.modules():
        if id(module) in inner or not isinstance(module, types):
            continue
        found.append(module)
        inner.update(id(m) for m in module.modules())
    return found


def count_flops(
    model: nn.Module,
    *inputs,
    attention_types: tuple[type, ...] = ATTENTION_LAYERS,
    **kwargs,
) -> FlopCount:
    """FLOPs of ``model(*inputs, **kwargs)`` under ``torch.no_grad`` (the model's mode is left as is).

    Works for any model (backbone, classifier, detector): convolutions and ``nn.Linear`` layers are
    measured by :class:`FlopCounterMode`; every attention layer (``isinstance`` of ``attention_types``, by
    default the :class:`AttentionLayer` protocol; nested ones counted through their outermost container only) adds ``attention_flops(H, W)`` for each
    image of each call, with ``H, W`` the spatial size of the input it received (found by forward
    pre-hooks). The counts are for the whole batch given.
    """
    attention_flops = 0
    linear_flops = 0
    handles = []
    counter = FlopCounterMode(display=False)

    def attention_hook(module: nn.Module, args) -> None:
        nonlocal attention_flops
        x = args[0]
        batch = x.shape[0] if x.ndim == 4 else 1
        attention_flops += batch * int(module.attention_flops(int(x.shape[-2]), int(x.shape[-1])))

    def linear_pre_hook(module: nn.Module, args) -> None:
        module._flops_before = counter.get_total_flops()

    def linear_hook(module: nn.Module, args, output) -> None:
        nonlocal linear_flops
        linear_flops += counter.get_total_flops() - module._flops_before
        del module._flops_before

    for layer in _outermost_attention_layers(model, attention_types):
        handles.append(layer.register_forward_pre_hook(attention_hook))
    for module in model.modules():
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_pre_hook(linear_pre_hook))
            handles.append(module.register_forward_hook(linear_hook))
    try:
        with torch.no_grad(), counter:
            model(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    counts = counter.get_flop_counts().get("Global", {})
    conv_flops = sum(int(v) for op, v in counts.items() if "convolution" in str(op))
    return FlopCount(conv=conv_flops, linear=int(linear_flops), attention=int(attention_flops))


def measure_backbone(name: str, image_size: int = 224, num_classes: int = 1000, **overrides) -> ModelInfo:
    """Parameters and FLOPs of preset ``name`` as a classifier (``num_classes`` head) on one
    ``image_size`` x ``image_size`` image, with the published values when known."""
    from sasa_det.backbones import build_classifier

    model = build_classifier(name, num_classes=num_classes, image_size=image_size, **overrides).eval()
    flops = count_flops(model, torch.zeros(1, 3, image_size, image_size))
    paper = (
        PAPER_VALUES.get(name, (None, None))
        if image_size == 224 and num_classes == 1000 and not overrides
        else (None, None)
    )
    return ModelInfo(name, count_parameters(model), flops, image_size, paper[0], paper[1])


def _difference(value: float, reference: float | None) -> str:
    if reference is None:
        return "—"
    return f"{value - reference:+.2f} ({100 * (value - reference) / reference:+.1f}%)"


def format_table(infos: Iterable[ModelInfo], markdown: bool = False) -> str:
    """A table of parameters (M) and FLOPs (B) beside the papers' values and the difference."""
    header = ["model", "params (M)", "paper", "diff", "FLOPs (B)", "paper", "diff", "attention FLOPs (B)"]
    rows: list[Sequence[str]] = []
    for info in infos:
        params_m = info.params / 1e6
        flops_b = info.flops.total / 1e9
        rows.append(
            [
                info.name,
                f"{params_m:.2f}",
                "—" if info.paper_params_m is None else f"{info.paper_params_m:.1f}",
                _difference(params_m, info.paper_params_m),
                f"{flops_b:.2f}",
                "—" if info.paper_flops_b is None else f"{info.paper_flops_b:.1f}",
                _difference(flops_b, info.paper_flops_b),
                f"{info.flops.attention / 1e9:.2f}",
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
