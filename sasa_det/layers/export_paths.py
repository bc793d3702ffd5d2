"""The plain-PyTorch attention paths a model runs while it is exported to ONNX or TorchScript.

The fast paths (SASA's compiled CPU loop and Triton kernels, AA's FlexAttention) are custom kernels that
neither exporter can record. :func:`portable_attention_paths` enters every attention layer's
:meth:`~sasa_det.layers.attention_layer.AttentionLayer.portable_path` for the duration of a ``with`` block,
which switches it to a path made of standard operators and restores the layer's own choice afterwards: SASA
runs ``"unfold"``, AA ``"sdpa"`` (the relative logits as a dense additive mask), the attention stem its only
path; each layer's ``portable_path`` says why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from torch import nn

from .attention_layer import attention_layers

__all__ = ["portable_attention_paths"]


def _count(number: int) -> str:
    return f"{number} layer" if number == 1 else f"{number} layers"


@contextmanager
def portable_attention_paths(model: nn.Module) -> Iterator[dict[str, str]]:
    """Run every attention layer of ``model`` on its exportable path inside the block.

    Yields, per kind of attention layer found in ``model``, the path it runs, e.g.
    ``{"sasa": "unfold (12 layers)", "aa": "sdpa (3 layers)"}``; restores each layer's setting on exit.
    """
    with ExitStack() as stack:
        used: Counter[tuple[str, str]] = Counter()
        for layer in attention_layers(model).values():
            used[layer.attention_kind, stack.enter_context(layer.portable_path())] += 1
        paths: dict[str, list[str]] = {}
        for (kind, path), number in used.items():
            paths.setdefault(kind, []).append(f"{path} ({_count(number)})")
        yield {kind: ", ".join(described) for kind, described in paths.items()}
