"""Export a detection checkpoint to ONNX or TorchScript and check it against PyTorch on a few images.

Examples::

    python tools/export.py outputs/shapes_demo/checkpoints/last.ckpt --format onnx --output shapes_demo.onnx
    python tools/export.py model.ckpt --format torchscript --output model.pt --images a.jpg b.jpg
    python tools/export.py model.ckpt --output model.onnx --score-threshold 0.3 model.min_size=800
    python tools/export.py model.ckpt --output model.onnx --images val/*.png --sweep 64:160

The exported graph takes one float32 [3, H, W] RGB image in 0..1 (any H and W) and returns boxes [D, 4]
(x1, y1, x2, y2 in the image's pixels), scores [D], labels [D] (and masks for Mask R-CNN): resizing and
post-processing (score threshold, NMS, top-k) are inside. SASA layers are exported on their plain-PyTorch
"unfold" path, AA layers on "sdpa", the attention stem on its only path. After writing, the file is run
(onnxruntime on the CPU, or torch.jit.load) on the --images (default: three synthetic images of different
sizes; --sweep: every height and width of a range) and compared with PyTorch; the exit status is 1 when a
detection count differs or max |Δ| exceeds the stated tolerance. Load the file with sasa_det.load_exported(path)
(a TorchScript file needs `import torchvision` before torch.jit.load).
Arguments after the checkpoint are key=value overrides of the stored config. ONNX needs the onnx extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sasa_det.cli import run_tool, tool_parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = tool_parser(__doc__)
    parser.add_argument("checkpoint", help="a detection checkpoint written by tools/train.py")
    parser.add_argument("overrides", nargs="*", help="overrides of the stored config as key=value")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="default: onnx")
    parser.add_argument("--output", required=True, help="file to write (e.g. model.onnx, model.pt)")
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="candidate score threshold inside the graph (default: the detector's, 0.05 unless configured)",
    )
    parser.add_argument("--images", nargs="*", default=[], help="images to check the export on")
    parser.add_argument(
        "--sweep",
        metavar="LOW:HIGH",
        type=_size_range,
        help="check on every height and every width from LOW to HIGH (3 images per side: square, taller, wider), "
        "the --images (or synthetic ones) resized to each size in turn",
    )
    return parser.parse_intermixed_args(argv)


def _size_range(text: str) -> tuple[int, int]:
    """``"64:160"`` -> ``(64, 160)``."""
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH in pixels, e.g. 64:160, got {text!r}") from None
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 1 <= LOW <= HIGH, got {text!r}")
    return low, high


def main(argv: Sequence[str] | None = None):
    """Export, check, print the check; exit 1 when the exported outputs disagree with PyTorch's."""
    args = parse_args(argv)
    from sasa_det.logging_setup import configure_logging

    configure_logging()
    from sasa_det.checkpoint_file import CheckpointFileError
    from sasa_det.config import ConfigError
    from sasa_det.data.image_io import ImageReadError
    from sasa_det.engine.inference.export import export_checkpoint
    from sasa_det.optional_extra import MissingExtra

    def progress(done: int, total: int) -> None:
        if done % 50 == 0:
            print(f"checked {done}/{total} images", file=sys.stderr, flush=True)

    try:
        report = export_checkpoint(
            args.checkpoint,
            args.output,
            args.format,
            args.overrides,
            args.score_threshold,
            args.images,
            sweep=args.sweep,
            progress=progress,
        )
    except MissingExtra as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except (ConfigError, CheckpointFileError, FileNotFoundError, ImageReadError, ValueError) as err:
        sys.exit(f"error: {err}")
    paths = "; ".join(f"{kind}: {path}" for kind, path in report.attention_paths.items()) or "none"
    print(f"{report.arch} exported to {report.output} ({report.format}); attention paths: {paths}")
    print(f"outputs: {', '.join(report.output_names)}; score threshold {report.score_threshold:g}")
    print(report.check.summary())
    if report.format == "torchscript":
        print(
            f'load it with sasa_det.load_exported("{report.output}"); a bare torch.jit.load needs '
            "`import torchvision` first (it registers torchvision::nms, which the graph calls)"
        )
    if not report.check.passed():
        print("error: the exported model disagrees with PyTorch beyond the tolerance", file=sys.stderr)
        sys.exit(1)
    return report


if __name__ == "__main__":
    run_tool(main)
