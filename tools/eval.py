"""Evaluate a checkpoint: COCO metrics, detections json and per-class table (or top-1/top-5 for classifiers).

Examples::

    python tools/eval.py outputs/shapes_demo/checkpoints/last.ckpt
    python tools/eval.py model.ckpt data.val_images=/data/coco/val2017 data.val_ann=/data/coco/annotations/instances_val2017.json
    python tools/eval.py model.ckpt --errors eval.error_score_threshold=0.5

The checkpoint holds its experiment config; arguments after it are ``key=value`` overrides of that config.
With eval.tta (e.g. eval.tta.flips=[none,horizontal] eval.tta.scales=[0.8,1.0,1.2]) it evaluates plain
inference and then test-time augmentation, and prints both side by side.
--errors (eval.error_analysis=true) also writes errors/confusion_matrix.png and .csv (classes + background
at IoU eval.error_iou_threshold, detections scoring eval.error_score_threshold or more) and
errors/false_positives.md (false positives per class by kind: localisation, confusion, background,
duplicate) and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sasa_det.cli import run_tool, tool_parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = tool_parser(__doc__)
    parser.add_argument("checkpoint", help="a checkpoint written by tools/train.py")
    parser.add_argument("overrides", nargs="*", help="overrides of the stored config as key=value")
    parser.add_argument("--out", default=None, help="output folder (default: eval_<checkpoint name> beside it)")
    parser.add_argument(
        "--errors", action="store_true", help="also write the confusion matrix and false positives by kind"
    )
    args = parser.parse_intermixed_args(argv)
    if args.errors:
        args.overrides.append("eval.error_analysis=true")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Evaluate and print the metrics; files go to the output folder."""
    args = parse_args(argv)
    from sasa_det.logging_setup import configure_logging

    configure_logging()
    import json

    from sasa_det.checkpoint_file import CheckpointFileError
    from sasa_det.config import ConfigError
    from sasa_det.engine.runner import evaluate

    try:
        result = evaluate(args.checkpoint, args.overrides, output_dir=args.out)
    except (ConfigError, CheckpointFileError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    print(json.dumps(result, indent=2), flush=True)
    if "plain_metrics" in result:
        print(_comparison(result["plain_metrics"], result["metrics"]), flush=True)
    errors = Path(result["output_dir"]) / "errors"
    if (errors / "false_positives.md").is_file():
        print((errors / "false_positives.md").read_text(), flush=True)
        print(f"confusion matrix: {errors / 'confusion_matrix.csv'} (and .png with matplotlib)", flush=True)
    return result


def _comparison(plain: dict, augmented: dict) -> str:
    """The AP metrics of plain inference beside those with test-time augmentation, as a Markdown table."""
    names = [name for name in plain if name.startswith("val/") and "/A" in name and name in augmented]
    lines = ["| metric | plain | TTA | Δ |", "| --- | ---: | ---: | ---: |"]
    for name in names:
        lines.append(
            f"| {name[4:]} | {plain[name]:.4f} | {augmented[name]:.4f} | {augmented[name] - plain[name]:+.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    run_tool(main)
