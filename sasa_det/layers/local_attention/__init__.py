"""SASA's local self-attention (Ramachandran et al. 2019): the layer and the implementations behind it.

One public entry point, :class:`LocalSelfAttention2d` (with :class:`SasaOptions`, its options as a network
applies them to all its SASA layers); the implementations (plain PyTorch, the compiled CPU loop, the Triton
kernels) are chosen through :mod:`.registry`.

* :mod:`.layer` -- the ``nn.Module``; :mod:`.options` -- its options (``SasaOptions``, no torch).
* :mod:`.registry` -- the registered implementations and ``impl="auto"``.
* :mod:`.torch_paths` -- ``"unfold"``, ``"shift"``, ``"halo"`` in plain PyTorch.
* :mod:`.cpu` (+ ``csrc/``) -- ``"cpp"``, the CPU default.
* :mod:`.triton_launch`, :mod:`.triton_kernels` -- ``"triton"``, the CUDA default.
"""

from sasa_det.lazy_names import lazy_names

_PROVIDED_BY = {
    "layer": "LocalSelfAttention2d",
    "options": "SasaOptions",
    "registry": "available_local_attention_impls register_local_attention_impl resolve_local_attention_impl",
}
__all__, __getattr__, __dir__ = lazy_names(__name__, globals(), _PROVIDED_BY)
