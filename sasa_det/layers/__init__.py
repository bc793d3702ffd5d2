"""Attention building blocks of SASA (Ramachandran et al. 2019) and AA (Bello et al. 2019)."""

from .attention_layer import AttentionLayer, QueryAttention, attention_layers
from .augmented_conv import AugmentedConv2d
from .local_attention import (
    LocalSelfAttention2d,
    SasaOptions,
    available_local_attention_impls,
    register_local_attention_impl,
    resolve_local_attention_impl,
)
from .spatially_aware_stem import SpatiallyAwareStem

__all__ = [
    "AttentionLayer",
    "AugmentedConv2d",
    "LocalSelfAttention2d",
    "QueryAttention",
    "SasaOptions",
    "SpatiallyAwareStem",
    "attention_layers",
    "available_local_attention_impls",
    "register_local_attention_impl",
    "resolve_local_attention_impl",
]
