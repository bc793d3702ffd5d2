"""Attention building blocks of SASA (Ramachandran et al. 2019) and AA (Bello et al. 2019)."""

from sasa_det.lazy_names import lazy_names

_PROVIDED_BY = {
    "attention_layer": "AttentionLayer QueryAttention attention_layers",
    "augmented_conv": "AugmentedConv2d",
    "local_attention.layer": "LocalSelfAttention2d",
    "local_attention.options": "SasaOptions",
    "local_attention.registry": "available_local_attention_impls register_local_attention_impl resolve_local_attention_impl",
    "spatially_aware_stem": "SpatiallyAwareStem",
}
__all__, __getattr__, __dir__ = lazy_names(__name__, globals(), _PROVIDED_BY)
