"""Small fixtures-as-functions shared by several test files."""

import importlib.util
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "shapes_demo.yaml"


def masks_from_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``uint8 [N, height, width]`` instance masks that fill each integer-rounded xyxy box."""
    masks = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[i, y1:y2, x1:x2] = 1
    return masks


def box_targets(per_image, sizes, with_masks: bool = False) -> list[dict[str, torch.Tensor]]:
    """Detection targets from ``(boxes xyxy, labels)`` per image; with masks filling the boxes, for images of
    ``sizes`` ``(height, width)``."""
    targets = [
        {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
        for boxes, labels in per_image
    ]
    if with_masks:
        for target, (height, width) in zip(targets, sizes):
            target["masks"] = masks_from_boxes(target["boxes"], height, width)
    return targets


def train_command(*overrides: str) -> list[str]:
    """The command line that trains the demo config with ``overrides`` (run it from the repository root)."""
    return [sys.executable, "tools/train.py", str(DEMO_CONFIG), *overrides]


def tiny_classification_overrides(folders, out, backbone: str = "{name: resnet26, base_width: 8}") -> list[str]:
    """Config overrides for a two-step CPU classification run on the image folders ``folders`` (32 px)."""
    return [
        "task=classification",
        f"output_dir={out}",
        f"data.train_dir={folders['train']}",
        f"data.val_dir={folders['val']}",
        "data.batch_size=4",
        "data.num_workers=0",
        f"classifier.backbone={backbone}",
        "classifier.image_size=32",
        "trainer.max_steps=2",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.enable_progress_bar=false",
    ]


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
    path = REPO / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resumable_run_overrides(
    shapes_root, out, *, num_train: int, num_val: int, side: int, stage_ops: str, val_batch: int, workers: int
) -> list[str]:
    """Config overrides of the demo config for the fault and resume tests: a ``side``-px shapes set with random
    multiscale (``side - 8`` or ``side - 16`` to ``side``) and flips, which a resumed run must replay exactly;
    an 8-wide ResNet-26 with ``stage_ops``, a validation every epoch, every step logged, no drawing."""
    smaller = side - 8 if side <= 48 else side - 16
    return [
        f"output_dir={out}",
        f"data.shapes.root={shapes_root}",
        f"data.shapes.num_train={num_train}",
        f"data.shapes.num_val={num_val}",
        f"data.shapes.image_size={side}",
        f"data.min_sizes=[{smaller},{side}]",
        f"data.max_size={side}",
        "data.batch_size=2",
        f"data.val_batch_size={val_batch}",
        f"data.num_workers={workers}",
        f"model.backbone={{name: resnet26, base_width: 8, stage_ops: {stage_ops}}}",
        "model.fpn_channels=32",
        f"model.min_size={side}",
        f"model.max_size={side}",
        "trainer.check_val_every_n_epoch=1",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "eval.save_visualization=0",
        "optim.warmup_steps=2",
    ]
