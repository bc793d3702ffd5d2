"""SASA's local self-attention (Ramachandran et al. 2019): the layer and the implementations behind it.

One public entry point, :class:`LocalSelfAttention2d`; the implementations (plain PyTorch, the compiled CPU
loop, the Triton kernels) are chosen through :mod:`.registry`.

* :mod:`.layer` -- the ``nn.Module``.
* :mod:`.registry` -- the registered implementations and ``impl="auto"``.
* :mod:`.torch_paths` -- ``"unfold"``, ``"shift"``, ``"halo"`` in plain PyTorch.
* :mod:`.cpu` (+ ``csrc/``) -- ``"cpp"``, the CPU default.
* :mod:`.triton_launch`, :mod:`.triton_kernels` -- ``"triton"``, the CUDA default.
"""

from .layer import SASA_OPTIONS, LocalSelfAttention2d, check_sasa_options
from .registry import (
    available_local_attention_impls,
    register_local_attention_impl,
    resolve_local_attention_impl,
)

__all__ = [
    "SASA_OPTIONS",
    "LocalSelfAttention2d",
    "available_local_attention_impls",
    "check_sasa_options",
    "register_local_attention_impl",
    "resolve_local_attention_impl",
]
