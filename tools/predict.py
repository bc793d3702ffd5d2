"""Draw a detection checkpoint's predictions on image files (one PNG per image).

Example::

    python tools/predict.py outputs/shapes_demo/checkpoints/last.ckpt data/shapes/val/000000.png --out predictions/
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a detection checkpoint written by tools/train.py")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="output folder for the drawn PNGs")
    parser.add_argument("--score-threshold", type=float, default=None, help="minimum score drawn (default: eval.draw_threshold)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the stored config")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list:
    """Predict and draw; prints the written files."""
    args = parse_args(argv)
    from sasa_det.logging_setup import configure_logging

    configure_logging()
    from sasa_det.checkpoint_file import CheckpointFileError
    from sasa_det.config import ConfigError
    from sasa_det.engine.runner import predict

    try:
        written = predict(args.checkpoint, args.images, args.out, args.set, args.score_threshold, args.device)
    except (ConfigError, CheckpointFileError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
