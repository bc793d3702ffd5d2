"""``Predictor``: a detection checkpoint ready to run on images of any size and kind.

Example::

    from sasa_det import Predictor

    predictor = Predictor("outputs/shapes_demo/checkpoints/last.ckpt", device="cuda", score_threshold=0.5)
    result = predictor("image.jpg")                  # one image -> one result
    results = predictor([pil_image, bgr_array], channels="BGR")   # a batch -> a list
    result["boxes"], result["scores"], result["labels"], result["class_names"]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch

__all__ = ["Predictor", "image_to_tensor"]

ImageLike = Any  # path, PIL image, numpy array or tensor


def image_to_tensor(image: ImageLike, channels: str = "RGB") -> torch.Tensor:
    """One image as a float ``[3, H, W]`` RGB tensor in 0..1 on the CPU.

    Args:
        image: a file path (read with :func:`sasa_det.data.image_io.load_rgb_image`: any mode, 16-bit scaled,
            EXIF orientation applied); a PIL image (any mode, converted the same way); a numpy array
            ``[H, W, 3]`` (uint8 0..255 or float 0..1) or ``[H, W]`` (gray); a tensor ``[3, H, W]`` (float in 0..1
            or uint8).
        channels: channel order of a numpy array, ``"RGB"`` or ``"BGR"`` (OpenCV); tensors are taken as RGB.

    Raises:
        ImageReadError: an unreadable file. ValueError: an array or tensor of another shape.
    """
    from PIL import Image

    from sasa_det.data.image_io import load_rgb_image, to_rgb_array

    if channels not in ("RGB", "BGR"):
        raise ValueError(f"channels must be 'RGB' or 'BGR', got {channels!r}")
    if isinstance(image, (str, os.PathLike)):
        return torch.from_numpy(load_rgb_image(image)).permute(2, 0, 1).float() / 255.0
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(to_rgb_array(image))).permute(2, 0, 1).float() / 255.0
    if isinstance(image, np.ndarray):
        array = image[:, :, None].repeat(3, axis=2) if image.ndim == 2 else image
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"a numpy image must be [H, W, 3] or [H, W], got shape {image.shape}")
        if channels == "BGR":
            array = array[:, :, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        return tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float()
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"a tensor image must be [3, H, W], got shape {tuple(image.shape)}")
        image = image.detach().cpu()
        return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    raise TypeError(f"cannot read an image from a {type(image).__name__}")


def _is_batch(images: Any) -> bool:
    if isinstance(images, (list, tuple)):
        return True
    return isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4


def _lower_detector_threshold(detector: torch.nn.Module, threshold: float) -> None:
    """Let the detector's own candidate filter (torchvision's ``score_thresh``, 0.05 by default) keep what
    ``threshold`` asks for, so a low threshold is not silently cut at the detector's."""
    for owner in (detector, getattr(detector, "roi_heads", None)):
        if owner is not None and isinstance(getattr(owner, "score_thresh", None), float):
            owner.score_thresh = min(owner.score_thresh, threshold)


class Predictor:
    """A detection checkpoint in eval mode that takes images as users have them and returns detections.

    Args:
        checkpoint: a detection checkpoint written by training (read safely, weights only).
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        score_threshold: detections below it are dropped (default: the checkpoint's ``eval.draw_threshold``).
        overrides: ``key=value`` overrides of the stored config (e.g. ``model.min_size=800``).
        amp: run under autocast (float16 on CUDA, bfloat16 on CPU); outputs are float32 either way.
        batch_size: images per forward pass when a batch is given.

    Calling it with one image returns one result, with a list (or a 4-D array/tensor) a list of results. A
    result holds, in the input image's pixel coordinates: ``boxes`` float ``[N, 4]`` (x1, y1, x2, y2),
    ``scores`` ``[N]``, ``labels`` int64 ``[N]`` (1..K), ``class_names`` (N strings) and, for Mask R-CNN,
    ``masks`` float ``[N, H, W]`` (probabilities; threshold at 0.5 for binary masks); tensors on the CPU,
    sorted by decreasing score. A threshold below the detector's own ``score_thresh`` lowers that one too.
    ``eval.tta`` in the stored config or the overrides runs test-time augmentation
    (:class:`~sasa_det.evaluation.TestTimeAugmentation`).
    The model resizes internally (``model.min_size``/``max_size``), so images of
    any size are accepted.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        device: str | torch.device = "cpu",
        score_threshold: Optional[float] = None,
        overrides: Optional[Sequence[str]] = None,
        amp: bool = False,
        batch_size: int = 1,
    ):
        from sasa_det.engine.inference.loading import load_module

        module, cfg = load_module(checkpoint, overrides)
        if cfg.task != "detection":
            raise ValueError(f"Predictor runs detectors; {checkpoint} is a {cfg.task!r} checkpoint")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        self.config = cfg
        self.class_names: list[str] = list(
            module.class_names or [str(i + 1) for i in range(int(cfg.model.num_classes))]
        )
        self.score_threshold = float(cfg.eval.draw_threshold if score_threshold is None else score_threshold)
        self.amp = bool(amp)
        self.batch_size = int(batch_size)
        _lower_detector_threshold(self.module.model, self.score_threshold)
        from sasa_det.engine.tasks import get_task

        #: whether ``eval.tta`` (stored config + overrides) runs every image on several views
        self.test_time_augmentation = get_task("detection").use_test_time_augmentation(self.module, cfg)

    def _name(self, label: int) -> str:
        return self.class_names[label - 1] if 0 < label <= len(self.class_names) else str(label)

    def _result(self, raw: dict[str, torch.Tensor]) -> dict[str, Any]:
        keep = raw["scores"].float() >= self.score_threshold
        order = raw["scores"][keep].float().argsort(descending=True)
        out = {key: value[keep][order].detach().float().cpu() for key, value in raw.items() if key != "labels"}
        out["labels"] = raw["labels"][keep][order].detach().cpu().long()
        if "masks" in out and out["masks"].dim() == 4:
            out["masks"] = out["masks"][:, 0]
        out["class_names"] = [self._name(int(label)) for label in out["labels"]]
        return out

    @torch.no_grad()
    def predict_tensors(self, images: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        """Results for float ``[3, H, W]`` RGB tensors in 0..1, ``batch_size`` at a time."""
        results = []
        autocast_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        for start in range(0, len(images), self.batch_size):
            chunk = [image.to(self.device) for image in images[start : start + self.batch_size]]
            with torch.autocast(self.device.type, dtype=autocast_dtype, enabled=self.amp):
                raw = self.module(chunk)
            results.extend(self._result(r) for r in raw)
        return results

    def __call__(
        self, images: ImageLike | Sequence[ImageLike], channels: str = "RGB"
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Detections of one image or of a batch (see the class docstring); ``channels`` as in :func:`image_to_tensor`."""
        if not _is_batch(images):
            return self.predict_tensors([image_to_tensor(images, channels)])[0]
        return self.predict_tensors([image_to_tensor(image, channels) for image in images])
