"""Draw a detection config's dataset images with their ground-truth boxes, masks and class names.

Examples::

    python tools/browse_dataset.py configs/shapes_demo.yaml --split train --out browse/ --num 16
    python tools/browse_dataset.py configs/my_data.yaml data.min_sizes=[800] --split val --out browse_val/

Arguments after the config are ``key=value`` overrides, as in train.py. The train split is drawn as the
model sees it (after the training transforms: resizing, flips), the val split as validated. One PNG per
image, named by its COCO image id.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sasa_det.cli import run_tool, tool_parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = tool_parser(__doc__)
    parser.add_argument("config", help="experiment YAML (may use _base_ inheritance)")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value, e.g. data.flip_prob=1.0")
    parser.add_argument(
        "--split", choices=("train", "val"), default="train", help="which split to draw (default: train)"
    )
    parser.add_argument("--out", required=True, help="output folder for the PNGs")
    parser.add_argument("--num", type=int, default=16, help="number of images, from the split's start (default: 16)")
    args = parser.parse_intermixed_args(argv)
    if args.num < 1:
        parser.error("--num must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> list:
    """Draw the images; prints how many and where. Returns the written paths."""
    args = parse_args(argv)
    from sasa_det.logging_setup import configure_logging

    configure_logging()
    from sasa_det.config import ConfigError
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.tasks import get_task
    from sasa_det.evaluation import save_dataset_images

    try:
        cfg = load_config(args.config, args.overrides)
        if cfg.task != "detection":
            raise ValueError(f"browse_dataset draws detection datasets; this config's task is {cfg.task!r}")
        task = get_task(cfg.task)
        cfg = task.prepare(cfg)
        datamodule = task.build_datamodule(cfg, train=args.split == "train")
        datamodule.report_dir = None  # browsing writes nothing into the run's output_dir
        dataset = datamodule.train_dataset if args.split == "train" else datamodule.val_dataset
    except (ConfigError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    written = save_dataset_images(dataset, args.out, args.num, class_names=dataset.class_names)
    print(f"{len(written)} {args.split} image(s) of {len(dataset)} drawn in {args.out}")
    return written


if __name__ == "__main__":
    run_tool(main)
