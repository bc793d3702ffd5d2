"""Check a COCO-format dataset the way training does, without training: every record, every image.

Examples::

    python tools/check_dataset.py data/my/train.json data/my/images
    python tools/check_dataset.py configs/finetune/retinanet_sasa_resnet50_convstem_custom.yaml data.train_ann=my.json
    python tools/check_dataset.py annotations/instances_train2017.json train2017 --images full --workers 16

Prints every problem (file, record, fix) and what training would fix (clipped boxes, converted image
modes, ...). Image results are cached by file size and modification time, so a second run is fast.
Exit status 0: usable as it is; 1: problems found.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sasa_det.cli import run_tool


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="an instances json (then IMAGES is required) or an experiment YAML")
    parser.add_argument("rest", nargs="*", help="IMAGES folder after a json; key=value overrides after a YAML")
    parser.add_argument(
        "--images",
        dest="level",
        choices=["header", "full", "off"],
        default=None,
        help="image check: header (size, mode, EXIF, end marker; default) or full (decode every pixel)",
    )
    parser.add_argument(
        "--masks", action="store_true", help="also check segmentations (json mode; a config decides itself)"
    )
    parser.add_argument("--num-classes", type=int, default=None, help="json mode: the model's num_classes to compare")
    parser.add_argument("--workers", type=int, default=None, help="threads for the image check (default: min(8, CPUs))")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the image-check cache")
    parser.add_argument("--cache-dir", default=None, help="image-check cache folder (default: ~/.cache/sasa_det)")
    parser.add_argument("--report-dir", default=None, help="also write data_report_<split>.{txt,json} here")
    args = parser.parse_args(argv)
    if not args.source.endswith((".yaml", ".yml")) and len(args.rest) != 1:
        parser.error("with an annotation json, give exactly one IMAGES folder after it")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Check and print; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from dataclasses import replace

    from sasa_det.data import DatasetChecks, DatasetError, check_dataset, check_splits

    try:
        if args.source.endswith((".yaml", ".yml")):  # the config imports the models (torch): only on this path
            from sasa_det.config import ConfigError
            from sasa_det.engine.experiment import load_config
            from sasa_det.engine.tasks.detection import coco_data_options

            try:
                cfg = load_config(args.source, args.rest)
            except ConfigError as err:
                raise DatasetError(str(err)) from None
            options = coco_data_options(cfg)
            given = {
                "check_images": args.level,
                "check_cache": False if args.no_cache else None,
                "check_cache_dir": args.cache_dir,
                "check_workers": args.workers,
            }
            options = replace(options, **{key: value for key, value in given.items() if value is not None})
            reports = check_splits(options, cfg.model.num_classes, report_dir=args.report_dir)
        else:
            checks = DatasetChecks(
                check_images=args.level or "header",
                check_cache=not args.no_cache,
                check_cache_dir=args.cache_dir,
                check_workers=args.workers,
            )
            reports = [
                check_dataset(
                    args.source,
                    args.rest[0],
                    checks,
                    with_masks=args.masks,
                    num_classes=args.num_classes,
                    report_dir=args.report_dir,
                )
            ]
    except (DatasetError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    for report in reports:
        print(report.format())
        if report_path := (args.report_dir and report.write(args.report_dir)):
            print(f"  (written to {report_path})")
    print("OK: no problem that stops training.", flush=True)
    return 0


if __name__ == "__main__":
    run_tool(main)
