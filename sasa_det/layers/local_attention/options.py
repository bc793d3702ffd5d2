"""The options of every SASA layer of a network: the ``sasa`` section of a model's config.

Importing this module loads neither torch nor the implementations: the valid ``impl`` values are read from the
registry only when a config sets one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING

from sasa_det.choices import choice

from . import defaults

if TYPE_CHECKING:
    from .layer import LocalSelfAttention2d

__all__ = ["SasaOptions"]


def _implementations() -> list[str]:
    from .registry import available_local_attention_impls

    return available_local_attention_impls()


@dataclass
class SasaOptions:
    """How every SASA layer of a network attends, whatever its width or stride: the ``sasa`` section of a
    model's config, applied alike to backbone stages, attention pyramid and attention heads.

    :meth:`factory` makes the layers; these defaults are the layer's (the paper's values).
    """

    #: implementation: "auto" (fastest for the device) | "triton" | "cpp" | "shift" | "halo" | "unfold" | registered ones
    impl: str = choice(_implementations, default=defaults.IMPL)
    #: window k (SASA Sec. 4.1: k = 7 everywhere)
    kernel_size: int = defaults.KERNEL_SIZE
    #: attention heads (SASA Sec. 4.1: 8)
    heads: int = defaults.HEADS
    #: divide logits by sqrt(head width); the paper's Eq. 3 has no scaling
    scaled: bool = defaults.SCALED
    #: exclude out-of-image keys from the softmax instead of zero keys/values (the paper is silent; public
    #: reimplementations zero-pad)
    mask_padding: bool = defaults.MASK_PADDING
    #: relative-embedding init: "content_scale" (N(0, 1): relative logits start as wide as the content
    #: logits) | "inv_sqrt_d" (N(0, 1/d), the AA paper's code; learns position far slower, docs/zoo.md)
    rel_init: str = choice(defaults.REL_INITS, default=defaults.REL_INIT)

    def factory(self) -> Callable[..., LocalSelfAttention2d]:
        """``factory(in_channels, out_channels, stride=1)`` -> a :class:`LocalSelfAttention2d` with these options."""
        from .layer import LocalSelfAttention2d

        return partial(LocalSelfAttention2d, **asdict(self))
