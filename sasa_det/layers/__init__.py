"""Attention building blocks of SASA (Ramachandran et al. 2019) and AA (Bello et al. 2019)."""

from .augmented_conv import AugmentedConv2d
from .local_attention import (
    SASA_OPTIONS,
    LocalSelfAttention2d,
    available_local_attention_impls,
    check_sasa_options,
    register_local_attention_impl,
    resolve_local_attention_impl,
)
from .spatially_aware_stem import SpatiallyAwareStem

__all__ = [
    "SASA_OPTIONS",
    "AugmentedConv2d",
    "LocalSelfAttention2d",
    "SpatiallyAwareStem",
    "available_local_attention_impls",
    "check_sasa_options",
    "register_local_attention_impl",
    "resolve_local_attention_impl",
]
