"""Convert Pascal VOC or YOLO annotations to COCO instances json, or split a COCO json into train/val.

Examples::

    # VOC: a folder of XML files (optionally only the ids of an ImageSets list)
    python tools/convert_dataset.py voc --annotations VOC2012/Annotations --images VOC2012/JPEGImages \\
        --out data/voc/all.json --split-file VOC2012/ImageSets/Main/trainval.txt
    # YOLO: labels/<same layout as images>.txt with normalised "class cx cy w h" or polygon lines
    python tools/convert_dataset.py yolo --labels data/yolo/labels --images data/yolo/images \\
        --classes data/yolo/classes.txt --out data/yolo/all.json
    # 20 % of the images for validation, reproducibly
    python tools/convert_dataset.py split --ann data/voc/all.json --val-fraction 0.2 --seed 0 --out-dir data/voc

The json's file names are relative to --images, so train with data.train_images=<--images>. Every
record is checked while converting; all problems are listed together and nothing is written then.
VOC 'difficult' objects become iscrowd=1 regions: never training targets, and ignored (not false
positives) by COCO evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from sasa_det.cli import run_tool


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    voc = sub.add_parser("voc", help="Pascal VOC XML folder -> COCO json")
    voc.add_argument("--annotations", required=True, help="folder of VOC .xml files")
    voc.add_argument("--images", required=True, help="image folder (file names in the json are relative to it)")
    voc.add_argument("--out", required=True, help="COCO json to write")
    voc.add_argument(
        "--classes", default=None, help="comma-separated class names in label order (default: all found, sorted)"
    )
    voc.add_argument("--split-file", default=None, help="ImageSets list: convert only these ids")
    yolo = sub.add_parser("yolo", help="YOLO txt labels -> COCO json")
    yolo.add_argument("--labels", required=True, help="folder of .txt label files (same layout as --images)")
    yolo.add_argument("--images", required=True, help="image folder (file names in the json are relative to it)")
    yolo.add_argument("--classes", required=True, help="class names file, one a line, in index order")
    yolo.add_argument("--out", required=True, help="COCO json to write")
    split = sub.add_parser("split", help="split a COCO json into train.json and val.json")
    split.add_argument("--ann", required=True, help="COCO json to split")
    split.add_argument(
        "--val-fraction", type=float, required=True, help="fraction of the images for validation, in (0, 1)"
    )
    split.add_argument("--seed", type=int, default=0, help="shuffle seed (default: 0)")
    split.add_argument("--out-dir", required=True, help="folder for train.json and val.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sub-command, print its summary as json; returns the exit status."""
    args = parse_args(argv)
    from sasa_det.data import DatasetError

    try:
        if args.command == "voc":
            from sasa_det.data import convert_voc

            classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
            summary = convert_voc(args.annotations, args.images, args.out, classes=classes, split_file=args.split_file)
            summary["note"] = (
                f"{summary['difficult']} difficult object(s) written as iscrowd=1 (ignored in training and evaluation)"
            )
        elif args.command == "yolo":
            from sasa_det.data import convert_yolo

            summary = convert_yolo(args.labels, args.images, args.classes, args.out)
        else:
            from sasa_det.data import split_coco

            summary = split_coco(args.ann, args.val_fraction, args.seed, args.out_dir)
    except (DatasetError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(summary, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    run_tool(main)
