"""Loading pre-trained backbone weights from classification checkpoints or plain state dicts."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping

import torch
from torch import nn

from sasa_det.checkpoint_file import read_checkpoint_file, tensors_of
from sasa_det.layers.augmented_conv import AugmentedConv2d
from sasa_det.layers.relative_position import slice_relative_table

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


_RELATIVE_TABLE_NAMES = ("rel_width", "rel_height")


def _is_resizable_relative_table(backbone: nn.Module, key: str, source: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether ``key`` is an AA relative table whose source and target differ only in length."""
    module_name, _, attribute = key.rpartition(".")
    if attribute not in _RELATIVE_TABLE_NAMES:
        return False
    try:
        module = backbone.get_submodule(module_name)
    except AttributeError:
        return False
    return (
        isinstance(module, AugmentedConv2d)
        and source.dim() == 2
        and target.dim() == 2
        and source.shape[1] == target.shape[1]
        and source.shape[0] % 2 == 1
        and target.shape[0] % 2 == 1
    )


def adapt_relative_tables(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Resize, in ``state`` (keys named as in ``model``), every AA relative table whose length differs from
    ``model``'s (centre slice or linear resampling, as the layer treats other map sizes; see
    :func:`load_backbone_weights`). Returns the resized keys."""
    own = model.state_dict()
    resized = []
    for key, tensor in state.items():
        if key not in own or tensor.shape == own[key].shape:
            continue
        if _is_resizable_relative_table(model, key, tensor, own[key]):
            length = (own[key].shape[0] + 1) // 2
            state[key] = slice_relative_table(tensor, length).to(dtype=own[key].dtype).contiguous()
            resized.append(key)
            logger.info(
                "resized AA relative table %s from %d to %d offsets (%s)",
                key,
                tensor.shape[0],
                own[key].shape[0],
                "centre slice" if own[key].shape[0] < tensor.shape[0] else "linear resampling",
            )
    return resized


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike | Mapping) -> tuple[list[str], list[str]]:
    """Load backbone weights by parameter name from a checkpoint file (or an already-loaded mapping).

    Accepts a Lightning checkpoint (a dict with ``state_dict``, e.g. keys ``model.backbone.layer1...``
    from :class:`~sasa_det.engine.tasks.classification_module.ClassificationModule`), a classifier state dict
    (``backbone.…`` plus ``fc.…``) or a plain backbone state dict (torchvision ResNet files included).
    The prefix is found automatically (the one under which most backbone keys appear) and stripped.
    Files are read with ``torch.load(weights_only=True)``.

    AA relative-position tables (``….rel_width`` ``(2W-1, d_kh)`` / ``….rel_height`` ``(2H-1, d_kh)`` of an
    :class:`~sasa_det.layers.augmented_conv.AugmentedConv2d`) are sized by the backbone's ``image_size``,
    so a classifier trained at 224 px and a detector's backbone built for its largest input side hold
    tables of different lengths. Such a table (only its first dimension differing) is converted to the
    target length as the layer itself treats maps of another size
    (:func:`~sasa_det.layers.relative_position.slice_relative_table`): the exact centre slice when the
    target is shorter, linear resampling (``align_corners=True``; an approximation for offsets the source
    never learned) when it is longer. Each resized table is logged.

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
