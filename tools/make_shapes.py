"""Generate the synthetic shapes dataset (COCO format) used by the demo and the tests.

Example::

    python tools/make_shapes.py data/shapes --num-train 1000 --num-val 200 --image-size 128
    python tools/make_shapes.py data/voc_demo --num-train 120 --num-val 30 --image-size 160 --voc
    python tools/make_shapes.py data/shapes_hard --classes circle square triangle star diamond --max-objects 6 \
        --min-scale 0.15 --max-scale 0.5 --scale-sampling log --max-occlusion 0.25 --clutter 3 \
        --background textured

``--voc`` also writes every image as a Pascal VOC folder (``ROOT/voc``), to try the custom-data path
(``tools/convert_dataset.py voc`` and ``split``) on data that is known to be learnable.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from sasa_det.cli import run_tool


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool; the defaults are those of ``ShapesOptions`` (the ``data.shapes``
    config section)."""
    from sasa_det.data.shapes.options import SHAPE_CLASSES, ShapesOptions

    default = ShapesOptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="output folder (train/, val/, annotations/ are written inside)")

    def option(name: str, kind: type, help_text: str, **kwargs) -> None:
        value = getattr(default, name.replace("-", "_"))
        parser.add_argument(f"--{name}", type=kind, default=value, help=f"{help_text} (default: {value})", **kwargs)

    option("num-train", int, "training images")
    option("num-val", int, "validation images")
    option("image-size", int, "square image side in pixels")
    option("seed", int, "master random seed")
    option("min-objects", int, "fewest shapes per image")
    option("max-objects", int, "most shapes per image")
    option("classes", str, f"shapes drawn, among {', '.join(SHAPE_CLASSES)}", nargs="+", choices=SHAPE_CLASSES)
    option("min-scale", float, "smallest shape diameter as a fraction of the image side")
    option("max-scale", float, "largest shape diameter as a fraction of the image side")
    option("scale-sampling", str, "uniform or log (log-uniform: small shapes are common)", choices=["uniform", "log"])
    option("max-occlusion", float, "largest fraction of a shape that later shapes may hide (0: never touch)")
    option("clutter", int, "most distractors (lines, rings, dots: not objects) per image")
    option("background", str, "noise or textured (gradients, stripes, blobs)", choices=["noise", "textured"])
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
    from sasa_det.data.shapes.options import ShapesOptions

    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(ShapesOptions) if f.name != "root"}
    try:
        paths = make_shapes_dataset(
            args.root, ShapesOptions(**fields), category_ids=args.category_ids, force=args.force, progress=True
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
