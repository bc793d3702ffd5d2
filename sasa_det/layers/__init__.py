"""Attention building blocks of SASA (Ramachandran et al. 2019) and AA (Bello et al. 2019).

The names below are imported from their modules on first use, so that the options (``SasaOptions``) load
without torch.
"""

from sasa_det.lazy_names import lazy_names

_HOME = {
    "AttentionLayer": "attention_layer",
    "QueryAttention": "attention_layer",
    "attention_layers": "attention_layer",
    "AugmentedConv2d": "augmented_conv",
    "LocalSelfAttention2d": "local_attention.layer",
    "SasaOptions": "local_attention.options",
    "available_local_attention_impls": "local_attention.registry",
    "register_local_attention_impl": "local_attention.registry",
    "resolve_local_attention_impl": "local_attention.registry",
    "SpatiallyAwareStem": "spatially_aware_stem",
}

__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_names(__name__, _HOME, globals())
