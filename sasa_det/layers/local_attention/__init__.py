"""SASA's local self-attention (Ramachandran et al. 2019): the layer and the implementations behind it.

One public entry point, :class:`LocalSelfAttention2d` (with :class:`SasaOptions`, its options as a network
applies them to all its SASA layers); the implementations (plain PyTorch, the compiled CPU loop, the Triton
kernels) are chosen through :mod:`.registry`.

* :mod:`.layer` -- the ``nn.Module``; :mod:`.options` -- its options (``SasaOptions``, no torch).
* :mod:`.registry` -- the registered implementations and ``impl="auto"``.
* :mod:`.torch_paths` -- ``"unfold"``, ``"shift"``, ``"halo"`` in plain PyTorch.
* :mod:`.cpu` (+ ``csrc/``) -- ``"cpp"``, the CPU default.
* :mod:`.triton_launch`, :mod:`.triton_kernels` -- ``"triton"``, the CUDA default.

The names below are imported from their modules on first use.
"""

from sasa_det.lazy_names import lazy_names

_HOME = {
    "LocalSelfAttention2d": "layer",
    "SasaOptions": "options",
    "available_local_attention_impls": "registry",
    "register_local_attention_impl": "registry",
    "resolve_local_attention_impl": "registry",
}

__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_names(__name__, _HOME, globals())
