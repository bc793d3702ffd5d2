"""The GPU check's sections, in the order they run, and how one section runs inside its own process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .correctness import correctness_sasa, correctness_stem_aa
from .environment import environment
from .results import RESULTS_FILE, append_result
from .speed import layers, model_section
from .train_eval import train_eval

__all__ = ["SECTIONS", "Section", "run_section", "section_settings"]


@dataclass(frozen=True)
class Section:
    """A part of the check: ``run(settings)`` yields result dicts; ``timeout_s`` bounds its process."""

    name: str
    timeout_s: float
    run: Callable[[dict], Iterator[dict]]


SECTIONS: list[Section] = [
    Section("environment", 60, environment),
    Section("correctness_sasa", 150, correctness_sasa),
    Section("correctness_stem_aa", 120, correctness_stem_aa),
    Section("layers", 120, layers),
    Section("model_retinanet_resnet50", 90, model_section("retinanet_resnet50")),
    Section("model_retinanet_sasa_resnet50", 120, model_section("retinanet_sasa_resnet50")),
    Section("model_retinanet_aa_resnet50", 120, model_section("retinanet_aa_resnet50")),
    Section("train_eval", 180, train_eval),
]


def section_settings(dry_run: bool, out: Path, train_config: Optional[str] = None) -> dict:
    """What every section reads: ``dry_run``, ``device`` (CUDA when there is one and it is not a dry run),
    ``out`` (the check's folder) and ``train_config`` (the experiment ``train_eval`` trains, or None)."""
    import torch

    device = "cuda" if not dry_run and torch.cuda.is_available() else "cpu"
    return {"dry_run": dry_run, "device": device, "out": str(out), "train_config": train_config}


def run_section(name: str, out: Path, dry_run: bool, train_config: Optional[str] = None) -> None:
    """Run one section in this process, appending each result to the results file as it comes."""
    section = {s.name: s for s in SECTIONS}[name]
    path = out / RESULTS_FILE
    for record in section.run(section_settings(dry_run, out, train_config)):
        append_result(path, {"section": name, **record})
