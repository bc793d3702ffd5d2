"""Plot a finished training run: training curves, per-class AP and precision/recall curves as PNGs.

Examples::

    python tools/analyze.py outputs/shapes_demo
    python tools/analyze.py outputs/shapes_demo --out figures/

Reads RUN_DIR/logs/version_0/metrics.csv (every train/* loss, the lr-* columns and the val/* metrics
against step) and RUN_DIR/evaluation.json (written at the end of training, and by tools/eval.py in its
output folder). Writes training_curves.png, per_class_ap.png and pr_curves_<iou type>.png. Needs
matplotlib (uv sync --extra plots); exits with status 2 without it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sasa_det.cli import tool_parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = tool_parser(__doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run's output_dir")
    parser.add_argument("--out", default=None, help="output folder for the PNGs (default: RUN_DIR/analysis)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None):
    """Draw the plots; prints the written files. Exit status 2 without matplotlib, 1 when an input is missing."""
    args = parse_args(argv)
    from sasa_det.logging_setup import configure_logging

    configure_logging()
    from sasa_det.analysis.run_plots import analyze_run
    from sasa_det.optional_matplotlib import MissingMatplotlib

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


if __name__ == "__main__":
    main()
