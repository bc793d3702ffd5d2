"""Draw a detection checkpoint's predictions on images, folders and globs; write COCO results json.

Examples::

    python tools/predict.py outputs/shapes_demo/checkpoints/last.ckpt data/shapes/val --out predictions/
    python tools/predict.py model.ckpt "photos/**/*.jpg" extra.png --out drawn/ --score-threshold 0.3
    python tools/predict.py model.ckpt photos/ --out drawn/ model.min_size=800 model.max_size=1333
    python tools/predict.py model.ckpt clip.mp4 --out drawn/ --batch-size 8
    python tools/predict.py model.ckpt --camera 0 --out drawn/ --max-frames 300

Arguments after the checkpoint are inputs (files, folders searched recursively, glob patterns) and
``key=value`` overrides of the stored config, as in train.py and eval.py. Each image is written as a PNG
under --out with its relative folder structure; detections.json holds the COCO results and images.json
their image ids and class names. An unreadable input is reported and skipped, and the exit status is 1
when any input failed.

A video file among the inputs (.mp4, .avi, .mov, .mkv, .webm, ...) or --camera INDEX is read frame by frame
with PyAV (the video extra: pip install 'sasa-det[video]', or uv sync --extra video), --batch-size frames
per forward pass, and written as NAME_detections.mp4 (every frame drawn) and NAME_detections.json (the
detections of every frame) under --out. A camera runs until --max-frames or Ctrl-C.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from sasa_det.cli import run_tool, tool_parser

_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")


def split_inputs(arguments: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(inputs, overrides)``: ``key=value`` arguments that are not existing paths are overrides."""
    inputs, overrides = [], []
    for argument in arguments:
        (overrides if _OVERRIDE.match(argument) and not Path(argument).exists() else inputs).append(argument)
    return inputs, overrides


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = tool_parser(__doc__)
    parser.add_argument("checkpoint", help="a detection checkpoint written by tools/train.py")
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="image files, folders, glob patterns, video files, and key=value overrides",
    )
    parser.add_argument("--camera", type=int, default=None, metavar="INDEX", help="predict a camera's frames")
    parser.add_argument("--batch-size", type=int, default=4, help="video frames per forward pass (default: 4)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop a video or camera after N frames")
    parser.add_argument("--out", required=True, help="output folder for the drawn PNGs and the json files")
    parser.add_argument(
        "--score-threshold", type=float, default=None, help="minimum score kept (default: eval.draw_threshold)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help=argparse.SUPPRESS)  # deprecated alias
    args = parser.parse_intermixed_args(argv)
    args.images, args.overrides = split_inputs(args.inputs)
    if args.set:
        print("warning: --set is deprecated; give key=value overrides after the inputs", file=sys.stderr)
        args.overrides += args.set
    if not args.images and args.camera is None:
        parser.error("no input images given (or --camera INDEX)")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    return args


def main(argv: Sequence[str] | None = None):
    """Predict and draw; prints a summary, exits 1 when any input failed."""
    args = parse_args(argv)
    from sasa_det.logging_setup import configure_logging

    configure_logging()
    from sasa_det.checkpoint_file import CheckpointFileError
    from sasa_det.config import ConfigError
    from sasa_det.engine.inference.video_prediction import video_inputs
    from sasa_det.engine.runner import predict
    from sasa_det.optional_extra import MissingExtra

    videos, args.images = video_inputs(args.images)
    if videos or args.camera is not None:
        try:
            _predict_videos(args, videos)
        except MissingExtra as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except (ConfigError, CheckpointFileError, FileNotFoundError, ValueError) as err:
            sys.exit(f"error: {err}")
        if not args.images:
            return None
    try:
        inputs = (args.checkpoint, args.images, args.out, args.overrides, args.score_threshold, args.device)
        report = predict(*inputs, progress=not args.no_progress)
    except (ConfigError, CheckpointFileError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(
        f"{len(report.written)} image(s) drawn in {args.out}"
        + (f"; COCO results: {report.detections_json}" if report.detections_json else "")
    )
    if report.empty:
        print(f"{len(report.empty)} image(s) without any detection at or above the threshold:")
        for path in report.empty:
            print(f"  {path}")
    if report.failed:
        print(f"{len(report.failed)} input(s) failed:", file=sys.stderr)
        for item, reason in report.failed:
            print(f"  {item}: {reason}", file=sys.stderr)
        sys.exit(1)
    return report


def _predict_videos(args: argparse.Namespace, videos: list[str]) -> list:
    """Predict every video file and the camera; missing files are named before the model loads."""
    from sasa_det.engine.inference.predictor import Predictor
    from sasa_det.engine.inference.video_prediction import predict_video
    from sasa_det.optional_extra import require_extra

    require_extra("av", "video", "Video prediction")
    missing = [video for video in videos if not Path(video).is_file()]
    if missing:
        raise FileNotFoundError(f"video file(s) not found: {', '.join(missing)}")
    predictor = Predictor(
        args.checkpoint, args.device, args.score_threshold, args.overrides, batch_size=args.batch_size
    )
    sources: list = [*videos, *([] if args.camera is None else [args.camera])]
    reports = []
    for source in sources:
        report = predict_video(predictor, source, args.out, args.batch_size, args.max_frames, not args.no_progress)
        print(f"{report.frames} frame(s) of {source}: {report.video}, {report.detections_json}")
        reports.append(report)
    return reports


if __name__ == "__main__":
    run_tool(main)
