"""Print parameters and FLOPs of backbone presets and of the papers' detectors beside the papers' values.

Usage::

    python tools/model_info.py resnet50 sasa_resnet50      # named presets
    python tools/model_info.py --all --markdown             # every preset, as a Markdown table
    python tools/model_info.py --detectors                  # the SASA paper's RetinaNets (640x640, 80 classes)
    python tools/model_info.py configs/shapes_demo.yaml     # the model a config builds (overrides: key=value)

Each preset is measured as a classifier with a 1000-class linear head on one square image
(``--image-size``, 224 by default, the papers' setting). A config (a YAML file, then optional key=value
overrides) is measured as its task builds it: a detector's backbone, pyramid and dense heads on one square image
of its evaluation size (``model.min_size``), a classifier on ``classifier.image_size``. FLOPs count a
multiply-add as 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sasa_det.cli import run_tool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, measure the chosen presets and print the table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names",
        nargs="*",
        help="backbone presets, e.g. resnet50 sasa_resnet50_convstem aa_resnet50 (--all: every one); or a config "
        "file followed by key=value overrides",
    )
    parser.add_argument("--all", action="store_true", help="measure every preset")
    parser.add_argument(
        "--image-size", type=int, default=None, help="side of the square input (default 224; a config's own size)"
    )
    parser.add_argument("--num-classes", type=int, default=1000, help="classes of the linear head (default 1000)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--detectors",
        action="store_true",
        help="measure the SASA paper's RetinaNet rows instead (several minutes on a CPU)",
    )
    args = parser.parse_args(argv)
    from sasa_det.analysis.model_info import format_table, measure_backbone
    from sasa_det.backbones import list_backbones

    if args.detectors:
        from sasa_det.analysis.detector_complexity import paper_detector_table

        print(paper_detector_table(markdown=args.markdown))
        return 0
    if args.names and _is_config(args.names[0]):
        return _config_info(args.names[0], args.names[1:], args.image_size, args.markdown)
    names = list_backbones() if args.all else args.names
    if not names:
        parser.error("give one or more preset names, a config file, or --all")
    unknown = [n for n in names if n not in list_backbones()]
    if unknown:
        hint = " (a config is a .yaml file, given first)" if any(_is_config(n) for n in unknown) else ""
        parser.error(f"unknown preset(s) {unknown}; choose from {list_backbones()}{hint}")
    size = args.image_size or 224
    infos = [measure_backbone(n, image_size=size, num_classes=args.num_classes) for n in names]
    print(format_table(infos, markdown=args.markdown))
    return 0


def _is_config(name: str) -> bool:
    """A config file rather than a preset name: a YAML suffix or a path separator."""
    return name.endswith((".yaml", ".yml")) or "/" in name or Path(name).is_file()


def _config_info(config: str, overrides: list[str], image_size: int | None, markdown: bool) -> int:
    """Measure the model of ``config`` and print its row and what was assumed; ``error: ...`` for a bad config."""
    from sasa_det.analysis.config_complexity import measure_config
    from sasa_det.analysis.model_info import format_table
    from sasa_det.config import ConfigError

    try:
        info, notes = measure_config(config, overrides, image_size)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table([info], markdown=markdown))
    print(f"image {info.image_size}x{info.image_size}; FLOPs: multiply-add = 2, one image")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    run_tool(main)
