"""Print parameters and FLOPs of backbone presets and of the papers' detectors beside the papers' values.

Usage::

    python tools/model_info.py resnet50 sasa_resnet50      # named presets
    python tools/model_info.py --all --markdown             # every preset, as a Markdown table
    python tools/model_info.py --detectors                  # the SASA paper's RetinaNets (640x640, 80 classes)

Each preset is measured as a classifier with a 1000-class linear head on one square image
(``--image-size``, 224 by default, the papers' setting); FLOPs count a multiply-add as 2.
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
        "names", nargs="*", help="backbone presets, e.g. resnet50 sasa_resnet50_convstem aa_resnet50 (--all: every one)"
    )
    parser.add_argument("--all", action="store_true", help="measure every preset")
    parser.add_argument("--image-size", type=int, default=224, help="side of the square input (default 224)")
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
    names = list_backbones() if args.all else args.names
    if not names:
        parser.error("give one or more preset names, or --all")
    unknown = [n for n in names if n not in list_backbones()]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; choose from {list_backbones()}")
    infos = [measure_backbone(n, image_size=args.image_size, num_classes=args.num_classes) for n in names]
    print(format_table(infos, markdown=args.markdown))
    return 0


if __name__ == "__main__":
    run_tool(main)
