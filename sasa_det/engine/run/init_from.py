"""``init_from``: start a model from the weights of another (no optimizer state), whatever wrote them.

Accepted files (read with ``weights_only=True``, see :mod:`sasa_det.checkpoint_file`):

* our checkpoints: a detector's (keys ``model.backbone.body.…``, ``model.head.…``) or a classifier's
  (``model.backbone.…``, ``model.fc.…``);
* plain state dicts of a detector or classifier (torchvision's ``retinanet_resnet50_fpn`` /
  ``maskrcnn_resnet50_fpn`` files load by name into our conv ResNet-50 detectors);
* backbone-only state dicts: torchvision ResNet files (``conv1.weight``, ``layer1.0.…``, ``fc.…``).

The key mapping is found, not configured: for each way of placing the file's keys (the whole model, or
only its backbone) the prefix under which most of the model's keys appear is taken, and the placement
that matches most keys wins. Tensors whose shape differs (a new class count in the classification
layer) are skipped and keep their fresh initialisation; AA relative tables of another length are resized
as the layer treats other map sizes. The :class:`InitReport` lists what was loaded, skipped (with both
shapes), missing and unused; :func:`initialize_from` prints its summary and writes it beside the run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from torch import nn

from sasa_det.backbones.weight_parts import parts_record, weights_by_part
from sasa_det.backbones.weights import adapt_relative_tables, find_backbone_prefix
from sasa_det.checkpoint_file import CheckpointFileError, read_checkpoint_file, tensors_of
from sasa_det.engine.run.run_directory import RunDirectory

__all__ = ["InitReport", "initialize_from", "load_matching_weights"]

logger = logging.getLogger(__name__)


@dataclass
class InitReport:
    """What :func:`load_matching_weights` did.

    Attributes:
        source: the file.
        placement: ``"model"`` or ``"backbone"`` (where the file's keys were put) and the prefixes used.
        loaded: model keys set from the file.
        skipped: ``{model key: (file shape, model shape)}`` left at their initialisation.
        missing: model keys the file does not provide.
        unused: file keys (under the chosen prefix) the model has no place for.
        resized: AA relative tables resized to the model's length.
        parts: the same by part of the model (stem, stages, their attention layers, heads, the file's
            tensors without a place), each with its line (:mod:`~sasa_det.backbones.weight_parts`).
    """

    source: str
    placement: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    parts: list[dict] = field(default_factory=list)

    def by_part(self) -> str:
        """One line per part of the model: what the file set there."""
        return "\n".join(f"  {part['line']}" for part in self.parts)

    def summary(self, limit: int = 12) -> str:
        """A human-readable report: counts, then the skipped keys with both shapes and the first missing ones."""
        lines = [
            f"init_from {self.source} ({self.placement}): loaded {len(self.loaded)} tensors, "
            f"skipped {len(self.skipped)} (shape differs, re-initialised), missing {len(self.missing)} "
            f"(kept their initialisation), unused {len(self.unused)}, resized {len(self.resized)} AA tables",
            self.by_part(),
        ]
        for key, (theirs, ours) in list(self.skipped.items())[:limit]:
            lines.append(f"  skipped {key}: file {tuple(theirs)} vs model {tuple(ours)}")
        for key in self.missing[:limit]:
            lines.append(f"  missing {key}")
        if len(self.missing) > limit:
            lines.append(f"  ... {len(self.missing) - limit} more missing (full list in the report file)")
        for key in self.unused[:limit]:
            lines.append(f"  unused  {key}")
        if len(self.unused) > limit:
            lines.append(f"  ... {len(self.unused) - limit} more unused (full list in the report file)")
        return "\n".join(lines)


def _placements(model: nn.Module, backbone_prefix: Optional[str]) -> list[tuple[str, str]]:
    """(name, model-key prefix) pairs the file may be placed at."""
    places = [("model", "")]
    if backbone_prefix:
        places.append(("backbone", backbone_prefix))
    return places


def load_matching_weights(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    source: str = "<state dict>",
    backbone_prefix: Optional[str] = None,
) -> InitReport:
    """Load the tensors of ``state`` that fit ``model`` (see the module docstring); returns the report.

    Args:
        model: the network to initialise (e.g. a detector or a classifier).
        state: the file's tensors (keys as stored).
        source: the file name, for the report.
        backbone_prefix: where ``model``'s backbone sits among its keys (``"backbone.body."`` for a
            detector, ``"backbone."`` for a classifier), so a backbone-only file can be placed there.

    Raises:
        ValueError: nothing in ``state`` matches ``model`` (naming a few keys of each).
    """
    own = model.state_dict()
    best = None
    for name, target_prefix in _placements(model, backbone_prefix):
        targets = {k[len(target_prefix) :] for k in own if k.startswith(target_prefix)}
        prefix, count = find_backbone_prefix(state.keys(), targets)
        if best is None or count > best[0]:
            best = (count, name, target_prefix, prefix)
    count, name, target_prefix, prefix = best
    if count == 0:
        raise ValueError(
            f"{source}: no tensor name matches the model (file keys start like {list(state)[:4]}, model keys like "
            f"{list(own)[:4]}); is it a checkpoint of this kind of model?"
        )
    mapped = {target_prefix + k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    report = InitReport(source=source, placement=f"{name}: file prefix {prefix!r} -> model prefix {target_prefix!r}")
    report.resized = adapt_relative_tables(model, mapped)
    loadable = {}
    for key, tensor in mapped.items():
        if key not in own:
            report.unused.append(key)
        elif tensor.shape != own[key].shape:
            report.skipped[key] = (list(tensor.shape), list(own[key].shape))
        else:
            loadable[key] = tensor
    model.load_state_dict(loadable, strict=False)
    report.loaded = sorted(loadable)
    report.missing = [
        k for k in own if k not in loadable and k not in report.skipped and not k.endswith("num_batches_tracked")
    ]
    parts = weights_by_part(model, report.loaded, report.skipped, report.unused, backbone_prefix or "")
    report.parts = parts_record(parts)
    return report


def initialize_from(
    model: nn.Module,
    path: str | os.PathLike,
    backbone_prefix: Optional[str] = None,
    run_dir: Optional[RunDirectory] = None,
    show: bool = True,
) -> InitReport:
    """Initialise ``model`` from the weights file ``path`` (only read), print what it set by part (``show``;
    the full summary is logged) and write the full report into the run directory (``init_from_report.json``,
    when given).

    Raises:
        CheckpointFileError: the file is missing, truncated, not a checkpoint or unsafe to load.
        ValueError: nothing in it matches ``model``.
    """
    what = "model.init_from weights"
    state = tensors_of(read_checkpoint_file(path, what), path, what)
    if any(k.startswith("model.") for k in state) and all(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items()}  # our LightningModules hold the network as .model
    report = load_matching_weights(model, state, str(path), backbone_prefix)
    if not report.loaded:
        raise CheckpointFileError(f"{what} {path}: no tensor of the file fits the model\n{report.summary()}")
    logger.info("%s", report.summary())
    if show:
        print(f"{what} {path}, by part:\n{report.by_part()}", flush=True)
    if run_dir is not None:
        run_dir.write_json(run_dir.init_from_report, asdict(report))
    return report
