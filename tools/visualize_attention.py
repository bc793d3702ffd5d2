"""Draw where one pixel looks in an attention layer (SASA, AA, the attention stem) of a detection checkpoint.

Examples::

    python tools/visualize_attention.py outputs/shapes_demo/checkpoints/last.ckpt --list-layers
    python tools/visualize_attention.py model.ckpt image.png --layer model.backbone.body.layer3.0.conv2 --pixel 40,60
    python tools/visualize_attention.py model.ckpt image.png --layer model.backbone.body.layer4.0.conv2 --head 3 --out attn.png

Without --pixel the query is the centre of the highest-scoring detection (the image centre when there is
none). The weights are those of the layer's own resolution (one value per layer position), painted over
the image pixels each position covers. --list-layers prints the attention layers with their strides (image
pixels per layer position, measured on IMAGE or on a blank image of the model's input size).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sasa_det.cli import run_tool, tool_parser


def _pixel(text: str) -> tuple[int, int]:
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pixel takes Y,X (two integers), got {text!r}") from None
    return y, x


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = tool_parser(__doc__)
    parser.add_argument("checkpoint", help="a detection checkpoint written by tools/train.py")
    parser.add_argument("image", nargs="?", help="image file")
    parser.add_argument("--layer", help="attention layer name (see --list-layers)")
    parser.add_argument(
        "--pixel", type=_pixel, default=None, metavar="Y,X", help="query pixel (default: best detection's centre)"
    )
    parser.add_argument(
        "--head",
        type=int,
        action="append",
        default=None,
        help="draw only this head (repeatable); the mean is always drawn",
    )
    parser.add_argument("--out", default="attention.png", help="output PNG (default: attention.png)")
    parser.add_argument(
        "--scale", type=int, default=None, help="enlarge panels by this factor (default: to at least 256 px)"
    )
    parser.add_argument(
        "--list-layers", action="store_true", help="print the attention layers and their strides, then exit"
    )
    args = parser.parse_args(argv)
    if not args.list_layers and (args.image is None or args.layer is None):
        parser.error("IMAGE and --layer are needed (or --list-layers)")
    return args


def main(argv: Sequence[str] | None = None):
    """List the layers, or draw the chosen layer's attention; returns the written path or the layer table."""
    args = parse_args(argv)
    from sasa_det.logging_setup import configure_logging

    configure_logging()
    import torch

    from sasa_det.analysis.attention_maps import attention_layers, capture_layer_inputs, compute_attention_map
    from sasa_det.checkpoint_file import CheckpointFileError
    from sasa_det.data.image_io import ImageReadError
    from sasa_det.engine.inference.predictor import Predictor, image_to_tensor
    from sasa_det.evaluation.attention_overlay import save_attention_panels

    try:
        predictor = Predictor(args.checkpoint)
        size = int(predictor.config.model.min_size)
        image = image_to_tensor(args.image) if args.image else torch.zeros(3, size, size)
    except (CheckpointFileError, ImageReadError, ValueError) as err:
        sys.exit(f"error: {err}")
    detector = predictor.module.model
    prefix = "model."
    if args.list_layers:
        captured = capture_layer_inputs(detector, image)
        rows = []
        for name, layer in attention_layers(detector).items():
            h, w = layer.attention_map_size(*captured.inputs[name].shape[-2:])
            kind = layer.attention_kind
            rows.append((prefix + name, kind, layer.heads, captured.padded[0] / h, (h, w)))
            print(
                f"{prefix + name:<48} {kind:<14} heads={layer.heads:<3} stride={captured.padded[0] / h:g}  grid={h}x{w}"
            )
        return rows
    name = args.layer[len(prefix) :] if args.layer.startswith(prefix) else args.layer
    if name not in attention_layers(detector):
        sys.exit(f"error: {args.layer!r} is not an attention layer; list them with --list-layers")
    pixel = args.pixel
    if pixel is None:
        best = predictor.predict_tensors([image])[0]
        if len(best["boxes"]):
            x1, y1, x2, y2 = best["boxes"][0].tolist()
            pixel = (int((y1 + y2) / 2), int((x1 + x2) / 2))
            print(
                f"query: centre of the best detection ({best['class_names'][0]} {float(best['scores'][0]):.2f}): {pixel[0]},{pixel[1]}"
            )
        else:
            pixel = (image.shape[1] // 2, image.shape[2] // 2)
            print(
                f"no detection scores {predictor.score_threshold:.2f} or more; query: the image centre {pixel[0]},{pixel[1]}"
            )
    try:
        result = compute_attention_map(detector, image, name, pixel)
    except ValueError as err:
        sys.exit(f"error: {err}")
    heads = args.head
    if heads and any(not 0 <= h < result.weights.shape[0] for h in heads):
        sys.exit(f"error: --head must be in 0..{result.weights.shape[0] - 1}")
    scale = args.scale or max(1, -(-256 // min(image.shape[1:])))
    uint8 = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    path = save_attention_panels(uint8, result.weights, pixel, args.out, heads=heads, scale=scale)
    print(
        f"{args.layer}: query {pixel} -> layer position {result.grid_query} (stride {result.stride[0]:g}); wrote {path}"
    )
    return path


if __name__ == "__main__":
    run_tool(main)
