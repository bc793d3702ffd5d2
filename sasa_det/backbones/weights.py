"""Loading pre-trained backbone weights from classification checkpoints or plain state dicts."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping

import torch
from torch import nn

from sasa_det.checkpoint_file import read_checkpoint_file, tensors_of
from sasa_det.layers.attention_layer import AttentionLayer

__all__ = ["adapt_relative_tables", "find_backbone_prefix", "load_backbone_weights"]

logger = logging.getLogger(__name__)


def _read_state_dict(source: str | os.PathLike | Mapping) -> Mapping[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return tensors_of(source, "<state dict>", "backbone weights")
    return tensors_of(read_checkpoint_file(source, "backbone weights"), source, "backbone weights")


def find_backbone_prefix(state_keys, backbone_keys) -> tuple[str, int]:
    """The key prefix under which ``backbone_keys`` appear most often in ``state_keys``.

    E.g. ``"model.backbone."`` for a Lightning classification checkpoint, ``"backbone."`` for a classifier
    state dict, ``""`` for a plain backbone state dict. Returns ``(prefix, number of matching keys)``;
    ties go to the shortest prefix.
    """
    wanted = set(backbone_keys)
    counts: Counter[str] = Counter()
    for key in state_keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in wanted:
                counts[".".join(parts[:i]) + "." if i else ""] += 1
    if not counts:
        return "", 0
    prefix, count = min(counts.items(), key=lambda item: (-item[1], len(item[0])))
    return prefix, count


def _attention_layer_of(model: nn.Module, key: str) -> AttentionLayer | None:
    """The attention layer that holds the parameter ``key`` of ``model`` directly, if any."""
    try:
        module = model.get_submodule(key.rpartition(".")[0])
    except AttributeError:
        return None
    return module if isinstance(module, AttentionLayer) else None


def adapt_relative_tables(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Resize, in ``state`` (keys named as in ``model``), every position table of an attention layer whose size
    differs from ``model``'s: each layer converts its own tables
    (:meth:`~sasa_det.layers.attention_layer.AttentionLayer.resize_position_table`; for AA, the centre slice or
    linear resampling of its relative tables, see :func:`load_backbone_weights`). Returns the resized keys;
    a mismatch no layer converts is left for the caller to report."""
    own = model.state_dict()
    resized = []
    for key, tensor in state.items():
        if key not in own or tensor.shape == own[key].shape:
            continue
        layer = _attention_layer_of(model, key)
        table = None if layer is None else layer.resize_position_table(key.rpartition(".")[2], tensor)
        if table is None or table.shape != own[key].shape:
            continue
        state[key] = table.to(dtype=own[key].dtype).contiguous()
        resized.append(key)
        logger.info(
            "resized %s position table %s from %s to %s, as the layer treats maps of that size",
            layer.attention_kind,
            key,
            tuple(tensor.shape),
            tuple(own[key].shape),
        )
    return resized


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike | Mapping) -> tuple[list[str], list[str]]:
    """Load backbone weights by parameter name from a checkpoint file (or an already-loaded mapping).

    Accepts a Lightning checkpoint (a dict with ``state_dict``, e.g. keys ``model.backbone.layer1...``
    from :class:`~sasa_det.engine.tasks.classification_module.ClassificationModule`), a classifier state dict
    (``backbone.…`` plus ``fc.…``) or a plain backbone state dict (torchvision ResNet files included).
    The prefix is found automatically (the one under which most backbone keys appear) and stripped.
    Files are read with ``torch.load(weights_only=True)``.

    Position tables sized by the attention map are converted by their layer (:func:`adapt_relative_tables`).
    AA's relative tables (``….rel_width`` ``(2W-1, d_kh)`` / ``….rel_height`` ``(2H-1, d_kh)`` of an
    :class:`~sasa_det.layers.augmented_conv.AugmentedConv2d`) are sized by the backbone's ``image_size``,
    so a classifier trained at 224 px and a detector's backbone built for its largest input side hold
    tables of different lengths. Such a table (only its first dimension differing) is converted to the
    target length as the layer itself treats maps of another size
    (:meth:`~sasa_det.layers.augmented_conv.AugmentedConv2d.resize_position_table`): the exact centre slice
    when the target is shorter, linear resampling (``align_corners=True``; an approximation for offsets the
    source never learned) when it is longer. Each resized table is logged.

    Returns:
        ``(missing, unexpected)``: backbone keys the file did not provide, and keys under the prefix the
        backbone does not have (e.g. ``fc.weight`` of a torchvision file). Both are also logged.

    Raises:
        CheckpointFileError: the file is missing, truncated, not a checkpoint or unsafe to load.
        ValueError: nothing in the file matches the backbone, or a matching key has another shape.
    """
    state = _read_state_dict(path)
    own = backbone.state_dict()
    prefix, matched = find_backbone_prefix(state.keys(), own.keys())
    if matched == 0:
        sample = list(state)[:5]
        raise ValueError(
            f"no key of the weights matches the backbone (weights keys start like {sample}, backbone keys "
            f"like {list(own)[:5]}); is this a checkpoint of the same architecture?"
        )
    selected = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    adapt_relative_tables(backbone, selected)
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs backbone {tuple(own[k].shape)}"
        for k, v in selected.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise ValueError(f"shape mismatch between the weights (prefix {prefix!r}) and the backbone: {mismatched[:10]}")
    result = backbone.load_state_dict(selected, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = list(result.unexpected_keys)
    logger.info(
        "loaded %d backbone tensors (prefix %r); missing %d: %s; unexpected %d: %s",
        len(selected) - len(unexpected),
        prefix,
        len(missing),
        missing[:10],
        len(unexpected),
        unexpected[:10],
    )
    return missing, unexpected
