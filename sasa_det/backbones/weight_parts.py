"""What a weights file set in a network, by part: the stem, each stage's convolutions and norms, each stage's
attention layers, the detector's other parts, and the file's tensors that have no place (a classifier's ``fc``).

One line per part, e.g. ``stem: loaded 5/5``, ``stage3 attention layers: kept initialised (12 tensors)``,
``fc: skipped (2 file tensors, no place in the model)``: what ``model.init_from`` and ``backbone.weights`` show
the user. Counts leave out BatchNorm's ``num_batches_tracked``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from torch import nn

from sasa_det.layers.attention_layer import AttentionLayer

__all__ = ["PartCount", "format_parts", "parts_record", "weights_by_part"]


@dataclass
class PartCount:
    """The tensors of one part: the model's (``total``), set from the file (``loaded``), left at their
    initialisation because the file's shape differs (``reinitialised``), and the file's with no place (``unused``)."""

    part: str
    attention: bool = False
    total: int = 0
    loaded: int = 0
    reinitialised: int = 0
    unused: int = 0

    def line(self) -> str:
        """The part's line of the report."""
        if self.total == 0:
            return f"{self.part}: skipped ({self.unused} file tensors, no place in the model)"
        if self.loaded == 0 and self.reinitialised == 0 and self.attention:
            text = f"{self.part}: kept initialised ({self.total} tensors)"
        else:
            text = f"{self.part}: loaded {self.loaded}/{self.total}"
            if self.reinitialised:
                text += f", re-initialised {self.reinitialised} (shape differs)"
            if self.total - self.loaded - self.reinitialised:
                text += f", kept initialised {self.total - self.loaded - self.reinitialised} (not in the file)"
        if self.unused:
            text += f"; {self.unused} file tensors unused"
        return text


def _area(key: str, backbone_prefix: str) -> str:
    """The part a key (named as in the model) belongs to: ``stem``, ``stage<k>`` or a backbone's other child
    inside the backbone, the first two names of the key outside it (``head.classification_head``)."""
    if key.startswith(backbone_prefix):
        first = key[len(backbone_prefix) :].split(".", 1)[0]
        if first in ("conv1", "bn1", "stem"):
            return "stem"
        if first.startswith("layer") and first[len("layer") :].isdigit():
            return f"stage{first[len('layer') :]}"
        return first
    modules = key.split(".")[:-1]  # the tensor's module path, without the tensor's own name
    return ".".join(modules[:2]) or key


def weights_by_part(
    model: nn.Module,
    loaded: Iterable[str],
    reinitialised: Iterable[str] = (),
    unused: Iterable[str] = (),
    backbone_prefix: str = "",
) -> list[PartCount]:
    """Count, per part of ``model``, its tensors and those ``loaded`` / ``reinitialised`` (model keys) and the
    ``unused`` file tensors (keys placed in the model's namespace), in the model's order.

    Args:
        backbone_prefix: where the ResNet sits among the model's keys (``""`` for a backbone itself,
            ``"backbone.body."`` for a detector): its keys are grouped by stem and stage.
    """
    attention = tuple(
        name + "." for name, module in model.named_modules() if name and isinstance(module, AttentionLayer)
    )
    loaded, reinitialised = set(loaded), set(reinitialised)
    parts: dict[tuple[str, bool], PartCount] = {}
    areas: dict[str, int] = {}  # first seen first: the model's order, then the file's parts it lacks

    def part_of(key: str) -> PartCount:
        area, is_attention = _area(key, backbone_prefix), key.startswith(attention)
        areas.setdefault(area, len(areas))
        name = f"{area} attention layers" if is_attention else area
        return parts.setdefault((area, is_attention), PartCount(name, attention=is_attention))

    for key in model.state_dict():
        if key.endswith("num_batches_tracked"):
            continue
        count = part_of(key)
        count.total += 1
        count.loaded += key in loaded
        count.reinitialised += key in reinitialised
    for key in unused:
        if not key.endswith("num_batches_tracked"):
            part_of(key).unused += 1
    return [parts[place] for place in sorted(parts, key=lambda place: (areas[place[0]], place[1]))]


def format_parts(parts: list[PartCount], indent: str = "  ") -> str:
    """The report's lines, one per part."""
    return "\n".join(indent + part.line() for part in parts)


def parts_record(parts: list[PartCount]) -> list[dict]:
    """The parts as JSON-ready dicts (with their line)."""
    return [{**asdict(part), "line": part.line()} for part in parts]
