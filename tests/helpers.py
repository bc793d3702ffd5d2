"""Small fixtures-as-functions shared by several test files."""

import torch


def masks_from_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``uint8 [N, height, width]`` instance masks that fill each integer-rounded xyxy box."""
    masks = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[i, y1:y2, x1:x2] = 1
    return masks
