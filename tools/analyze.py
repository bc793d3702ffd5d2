"""Plot a finished training run: training curves, per-class AP and precision/recall curves as PNGs.

Examples::

    python tools/analyze.py outputs/shapes_demo
    python tools/analyze.py outputs/shapes_demo --out figures/
    python tools/analyze.py --predictions eval_last/detections_bbox.json --ann data/val.json --out errors/

Reads RUN_DIR/logs/version_0/metrics.csv (every train/* loss, the lr-* columns and the val/* metrics
against step) and RUN_DIR/evaluation.json (written at the end of training, and by tools/eval.py in its
output folder). Writes training_curves.png, per_class_ap.png and pr_curves_<iou type>.png. Needs
matplotlib (uv sync --extra plots); exits with status 2 without it.

With --predictions (a COCO results file, e.g. detections_bbox.json of tools/eval.py) and --ann (the COCO
annotations of the same images) it writes the error analysis instead: confusion_matrix.png and .csv
(classes + background at IoU --iou, detections scoring --score or more) and false_positives.md (false
positives per class by kind: localisation, confusion, background, duplicate), and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sasa_det.cli import run_tool, tool_parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = tool_parser(__doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a training run's output_dir")
    parser.add_argument("--out", default=None, help="output folder for the PNGs (default: RUN_DIR/analysis)")
    parser.add_argument("--predictions", default=None, help="COCO results file for the error analysis")
    parser.add_argument("--ann", default=None, help="COCO annotation file of the predicted images")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU of a match in the error analysis (0.5)")
    parser.add_argument("--score", type=float, default=0.3, help="lowest score analysed (0.3)")
    args = parser.parse_args(argv)
    if args.predictions is not None or args.ann is not None:
        if args.predictions is None or args.ann is None:
            parser.error("the error analysis needs both --predictions and --ann")
        if args.out is None:
            parser.error("the error analysis needs --out")
    elif args.run_dir is None:
        parser.error("give RUN_DIR, or --predictions and --ann")
    return args


def main(argv: Sequence[str] | None = None):
    """Draw the plots; prints the written files. Exit status 2 without matplotlib, 1 when an input is missing."""
    args = parse_args(argv)
    from sasa_det.logging_setup import configure_logging

    configure_logging()
    from sasa_det.analysis.run_plots import analyze_run
    from sasa_det.optional_matplotlib import MissingMatplotlib

    if args.predictions is not None:
        return _error_analysis(args)
    try:
        written = analyze_run(args.run_dir, args.out)
    except MissingMatplotlib as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    print(f"{len(written)} plot(s) written:")
    for path in written:
        print(f"  {path}")


def _error_analysis(args: argparse.Namespace):
    """Write and print the error analysis of --predictions against --ann."""
    from sasa_det.evaluation.error_analysis import analyze_error_files, write_error_analysis

    try:
        analysis = analyze_error_files(args.ann, args.predictions, args.iou, args.score)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    written = write_error_analysis(analysis, args.out)
    print(analysis.kinds_table())
    print(f"{len(written)} file(s) written:")
    for path in written:
        print(f"  {path}")
    return analysis


if __name__ == "__main__":
    run_tool(main)
