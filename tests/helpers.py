"""Small fixtures-as-functions shared by several test files."""

import importlib.util
from pathlib import Path

import torch


def masks_from_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``uint8 [N, height, width]`` instance masks that fill each integer-rounded xyxy box."""
    masks = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[i, y1:y2, x1:x2] = 1
    return masks


def tiny_shapes_overrides(shapes_root, out, num_train: int = 8, num_val: int = 5) -> list[str]:
    """Config overrides of the demo config for a seconds-long CPU run: a 64-px shapes set generated under
    ``shapes_root``, an 8-wide ResNet-26 with SASA and AA stages, 2 steps, no progress bar, one drawing."""
    return [
        f"output_dir={out}",
        f"data.shapes.root={shapes_root}",
        f"data.shapes.num_train={num_train}",
        f"data.shapes.num_val={num_val}",
        "data.shapes.image_size=64",
        "data.min_sizes=[64]",
        "data.max_size=64",
        "data.batch_size=2",
        "data.val_batch_size=2",
        "data.num_workers=0",
        "model.backbone={name: resnet26, base_width: 8, stage_ops: [conv, conv, sasa, aa]}",
        "model.head=conv",
        "model.fpn_channels=64",  # GroupNorm(32) heads on a 1x1 P7 need 2+ channels per group
        "model.min_size=64",
        "model.max_size=64",
        "trainer.max_steps=2",
        "trainer.enable_progress_bar=false",
        "eval.save_visualization=1",
    ]


def load_tool(name: str):
    """The module of ``tools/<name>.py`` (tools are scripts, not a package), to call its ``main(argv)``."""
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
