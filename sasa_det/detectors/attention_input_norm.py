"""Normalising the input of each attention layer of the attention pyramid and heads (pre-norm).

SASA's logits are unscaled dot products (Eq. 3), so their spread grows with the square of the input's scale.
The pyramid's attention layers read the sum of a 1×1 lateral and the upsampled coarser level, and the heads'
first layer reads the pyramid's output, neither normalised: with the demo's quarter-width backbone these inputs
have an RMS of 2 to 2.5 and the logits a spread of 13 to 20 at initialisation, so each query's softmax is almost
one-hot and the query/key projections get almost no gradient. A LayerNorm over the channels at each position
(ConvNeXt's ``LayerNorm2d``, what a transformer block puts before attention) brings the spread to about
``sqrt(d)`` whatever the level, including the 1×1 P7 map where a GroupNorm over two channels per group would
keep only signs. The paper is silent on normalisation; ``model.attention_norm`` chooses (see the ablation in
docs/zoo.md).
"""

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models.convnext import LayerNorm2d

from sasa_det.detectors.options import ATTENTION_NORMS

__all__ = ["InputNormalizedAttention", "attention_core", "with_input_norm"]


class InputNormalizedAttention(nn.Module):
    """``attention(norm(x))``: ``norm`` a per-position LayerNorm over the ``in_channels`` input channels.

    Shapes are the attention layer's. Parameter names: ``norm.{weight,bias}``, ``attention.*``.
    """

    def __init__(self, in_channels: int, attention: nn.Module) -> None:
        super().__init__()
        self.norm = LayerNorm2d(in_channels, eps=1e-6)
        self.attention = attention

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W)`` -> the attention layer's output on the normalised input."""
        return self.attention(self.norm(x))


def with_input_norm(attention_layer: Callable[..., nn.Module], norm: str) -> Callable[..., nn.Module]:
    """A factory like ``attention_layer(in_channels, out_channels, stride=1)`` whose layers first normalise
    their input (``norm="layer"``), or ``attention_layer`` itself (``norm="none"``)."""
    if norm not in ATTENTION_NORMS:
        raise ValueError(f"unknown attention norm {norm!r}; choose one of {ATTENTION_NORMS}")
    if norm == "none":
        return attention_layer

    def make(in_channels: int, out_channels: int, *args, **kwargs) -> nn.Module:
        return InputNormalizedAttention(in_channels, attention_layer(in_channels, out_channels, *args, **kwargs))

    return make


def attention_core(layer: nn.Module) -> nn.Module:
    """The attention layer itself, inside an :class:`InputNormalizedAttention` or not."""
    return layer.attention if isinstance(layer, InputNormalizedAttention) else layer
