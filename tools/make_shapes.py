"""Generate the synthetic shapes dataset (COCO format) used by the demo and the tests.

Example::

    python tools/make_shapes.py data/shapes --num-train 1000 --num-val 200 --image-size 128
    python tools/make_shapes.py data/voc_demo --num-train 120 --num-val 30 --image-size 160 --voc

``--voc`` also writes every image as a Pascal VOC folder (``ROOT/voc``), to try the custom-data path
(``tools/convert_dataset.py voc`` and ``split``) on data that is known to be learnable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sasa_det.cli import run_tool


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="output folder (train/, val/, annotations/ are written inside)")
    parser.add_argument("--num-train", type=int, default=1000, help="training images (default: 1000)")
    parser.add_argument("--num-val", type=int, default=200, help="validation images (default: 200)")
    parser.add_argument("--image-size", type=int, default=128, help="square image side in pixels (default: 128)")
    parser.add_argument("--seed", type=int, default=0, help="master random seed (default: 0)")
    parser.add_argument("--min-objects", type=int, default=1, help="fewest shapes per image (default: 1)")
    parser.add_argument("--max-objects", type=int, default=4, help="most shapes per image (default: 4)")
    parser.add_argument(
        "--classes",
        nargs="+",
        default=["circle", "square", "triangle"],
        help="shapes drawn, among circle, square, triangle, star, diamond (default: circle square triangle)",
    )
    parser.add_argument(
        "--category-ids",
        type=int,
        nargs="+",
        default=None,
        metavar="ID",
        help="COCO category ids of the classes, in order (default: 1..K)",
    )
    parser.add_argument("--force", action="store_true", help="regenerate even if an identical dataset exists")
    parser.add_argument("--voc", action="store_true", help="also write all images as a Pascal VOC folder, ROOT/voc")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    """Generate the dataset and print where its parts are."""
    args = parse_args(argv)
    from sasa_det.logging_setup import configure_logging

    configure_logging()
    from sasa_det.data.shapes import make_shapes_dataset

    try:
        paths = make_shapes_dataset(
            args.root,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
            seed=args.seed,
            min_objects=args.min_objects,
            max_objects=args.max_objects,
            category_ids=args.category_ids,
            classes=args.classes,
            force=args.force,
            progress=True,
        )
    except ValueError as err:
        sys.exit(f"make_shapes: {err}")
    if args.voc:
        from pathlib import Path

        from sasa_det.data import export_voc

        voc = export_voc(
            [paths["train_ann"], paths["val_ann"]],
            [paths["train_images"], paths["val_images"]],
            Path(args.root) / "voc",
            prefixes=["train", "val"],
        )
        paths = {**paths, "voc": voc["root"]}
    for key, value in paths.items():
        print(f"{key}: {value}")
    return paths


if __name__ == "__main__":
    run_tool(main)
