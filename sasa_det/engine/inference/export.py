"""Exporting a detection checkpoint to ONNX or TorchScript, checked against PyTorch in the same call.

The exported graph is the whole detector, post-processing included: it takes **one image**, a float32
``[3, H, W]`` RGB tensor in 0..1 of any height and width, and returns the detections in that image's pixel
coordinates::

    boxes  float32 [D, 4]   x1, y1, x2, y2
    scores float32 [D]      decreasing
    labels int64   [D]      1..K (the checkpoint's class order)
    masks  float32 [D, 1, H, W]   Mask R-CNN only: probabilities

Resizing (``model.min_size``/``max_size``), normalisation, anchors, box decoding, the score threshold, the
top-k and NMS all run inside the graph; the resize is recorded with PyTorch's rounding of the scaled size
(:mod:`sasa_det.detectors.traced_resize`), so every image size gets PyTorch's resized size. Height and width
are dynamic axes of the ONNX graph; the batch is one image, because torchvision's per-image post-processing is
a Python loop over the batch that tracing unrolls (run images one after another, or a batch through PyTorch). TorchScript is a trace: Python control flow is
recorded for the traced image, so :func:`export_checkpoint` checks other sizes too and reports what it finds.
Load an exported file with :func:`load_exported` (``sasa_det.load_exported``): a TorchScript file needs
``import torchvision`` before ``torch.jit.load``, which registers the operators it calls (``torchvision::nms``).

The attention layers run their plain-PyTorch paths while exporting (:mod:`sasa_det.layers.export_paths`:
SASA ``"unfold"``, AA ``"sdpa"``, the stem's only path); the reference outputs come from the model on the
paths it uses in PyTorch, so the check also covers the difference between those paths.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from sasa_det.detectors.traced_resize import traced_resize
from sasa_det.layers.export_paths import portable_attention_paths
from sasa_det.optional_extra import require_extra

__all__ = [
    "BOX_TOLERANCE",
    "EXPORT_FORMATS",
    "ONNX_OPSET",
    "SCORE_TOLERANCE",
    "ExportCheck",
    "ExportReport",
    "ExportedDetector",
    "compare_detections",
    "export_checkpoint",
    "export_detector",
    "exported_format",
    "load_exported",
    "load_torchscript",
    "resized_check_images",
    "sweep_image_sizes",
]

logger = logging.getLogger(__name__)

#: ``--format`` values.
EXPORT_FORMATS = ("onnx", "torchscript")
#: ONNX opset written (17: LayerNormalization and the SDPA lowering the TorchScript-based exporter knows).
ONNX_OPSET = 17
#: Largest |Δ| (pixels) between exported and PyTorch boxes that the check accepts.
BOX_TOLERANCE = 1e-2
#: Largest |Δ| between exported and PyTorch scores that the check accepts.
SCORE_TOLERANCE = 1e-4

#: A run of an exported model: image ``[3, H, W]`` -> its outputs as numpy arrays, in ``output_names`` order.
ExportedRun = Callable[[Tensor], list[np.ndarray]]


class ExportedDetector(nn.Module):
    """A torchvision detector as a graph of tensors: ``image [3, H, W] -> (boxes, scores, labels[, masks])``."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector.eval()
        has_masks = getattr(getattr(detector, "roi_heads", None), "mask_predictor", None) is not None
        #: the names of the outputs, in order
        self.output_names: tuple[str, ...] = ("boxes", "scores", "labels") + (("masks",) if has_masks else ())

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        """Detections of one float ``[3, H, W]`` image in 0..1 (see the module docstring)."""
        result = self.detector([image])[0]
        return tuple(result[name] for name in self.output_names)


def export_detector(detector: nn.Module, output: str | os.PathLike, fmt: str, example: Tensor) -> dict[str, str]:
    """Write ``detector`` (eval mode) to ``output`` as ``fmt`` (``"onnx"`` or ``"torchscript"``), recorded on the
    float ``[3, H, W]`` image ``example``. Returns the attention paths used (see :func:`portable_attention_paths`)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {EXPORT_FORMATS}")
    wrapper = ExportedDetector(detector)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with (
        portable_attention_paths(detector) as paths,
        traced_resize(detector),
        torch.no_grad(),
        warnings.catch_warnings(),
    ):
        # tracing warns at every Python value taken from a tensor (torchvision's resize and loops): the check
        # below, on several image sizes, is what tells whether the recorded graph generalises
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        if fmt == "onnx":
            require_extra("onnx", "onnx", "ONNX export")
            dynamic = {"image": {1: "height", 2: "width"}}
            dynamic.update({name: {0: "detections"} for name in wrapper.output_names})
            torch.onnx.export(
                wrapper,
                (example,),
                str(output),
                dynamo=False,  # the TorchScript-based exporter: torchvision's detection models are written for it
                opset_version=ONNX_OPSET,
                input_names=["image"],
                output_names=list(wrapper.output_names),
                dynamic_axes=dynamic,
            )
        else:
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
            traced.save(str(output))
    return paths


def load_torchscript(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` an exported TorchScript detector, importing torchvision first.

    The graph calls torchvision's operators (``torchvision::nms``, ``roi_align``), which exist in TorchScript only
    once ``import torchvision`` has registered them; a bare ``torch.jit.load`` fails with ``Unknown builtin op:
    torchvision::nms``. Raises FileNotFoundError naming a missing file.
    """
    import torchvision  # noqa: F401  (registers torchvision::nms and the other operators the graph calls)

    if not Path(path).is_file():
        raise FileNotFoundError(f"no exported model at {path}")
    return torch.jit.load(str(path), map_location=map_location)


def exported_format(path: str | os.PathLike) -> str:
    """``"torchscript"`` (a zip archive with TorchScript code, as ``torch.jit.save`` writes) or ``"onnx"``
    (anything else). Raises FileNotFoundError, and ValueError for a zip archive without code (a checkpoint or
    state dict written by ``torch.save``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no exported model at {path}")
    if not zipfile.is_zipfile(path):
        return "onnx"
    with zipfile.ZipFile(path) as archive:
        if not any("/code/" in name for name in archive.namelist()):
            raise ValueError(
                f"{path} is a file written by torch.save (a checkpoint or state dict), not an export; "
                "export a checkpoint with tools/export.py"
            )
    return "torchscript"


def load_exported(path: str | os.PathLike, fmt: Optional[str] = None) -> ExportedRun:
    """Load an exported detector for running: ``run(image)`` takes one float ``[3, H, W]`` image in 0..1 (a tensor
    or a numpy array) and returns its outputs as numpy arrays (``boxes, scores, labels[, masks]``).

    ``fmt``: ``"onnx"`` (run by onnxruntime on the CPU; the ``onnx`` extra) or ``"torchscript"`` (loaded by
    :func:`load_torchscript`, which imports torchvision first); by default read from the file.
    """
    fmt = fmt or exported_format(path)
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {EXPORT_FORMATS}")
    if fmt == "onnx":
        ort = require_extra("onnxruntime", "onnx", "Running an ONNX export")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda image: session.run(None, {"image": np.asarray(image, dtype=np.float32)})
    module = load_torchscript(path)

    def run(image: Tensor | np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in module(torch.as_tensor(image, dtype=torch.float32))]

    return run


@dataclass
class ExportCheck:
    """Exported outputs against PyTorch's on a few images.

    Each exported detection is paired with the PyTorch detection of the same label whose box is closest
    (order may differ where scores tie); ``max_box_delta`` / ``max_score_delta`` are the largest |Δ| over
    the pairs, ``inf`` when an image's detection counts differ (listed in ``count_mismatches``).
    """

    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    max_box_delta: float = 0.0
    max_score_delta: float = 0.0
    detections: int = 0
    count_mismatches: list[str] = field(default_factory=list)

    def passed(self, box_tolerance: float = BOX_TOLERANCE, score_tolerance: float = SCORE_TOLERANCE) -> bool:
        """Every image has the same number of detections and the deltas are within the tolerances."""
        return (
            not self.count_mismatches
            and self.max_box_delta <= box_tolerance
            and self.max_score_delta <= score_tolerance
        )

    def summary(self) -> str:
        """``max |Δ| boxes …, scores …`` and the images it covers (their sizes, or their ranges when many)."""
        if len(self.image_sizes) <= 6:
            sizes = ", ".join(f"{h}x{w}" for h, w in self.image_sizes)
        else:
            heights, widths = ({size[axis] for size in self.image_sizes} for axis in (0, 1))
            sizes = f"{len(heights)} heights {min(heights)}-{max(heights)}, {len(widths)} widths {min(widths)}-{max(widths)}"
        text = (
            f"max |Δ| boxes {self.max_box_delta:.3g} px, scores {self.max_score_delta:.3g} "
            f"over {self.detections} detection(s) on {len(self.image_sizes)} image(s) ({sizes}); "
            f"tolerance boxes {BOX_TOLERANCE:g} px, scores {SCORE_TOLERANCE:g}"
        )
        shown = "".join(f"\n  detection count differs: {m}" for m in self.count_mismatches[:10])
        more = len(self.count_mismatches) - 10
        return text + shown + (f"\n  ... and on {more} more image(s)" if more > 0 else "")


def compare_detections(
    reference: dict[str, Tensor], exported: dict[str, np.ndarray]
) -> tuple[float, float] | tuple[int, int]:
    """``(max box |Δ|, max score |Δ|)`` between one image's PyTorch and exported detections, paired as
    :class:`ExportCheck` says; ``(n_reference, n_exported)`` as ints when the counts differ."""
    ref_boxes, ref_scores, ref_labels = (reference[k].double() for k in ("boxes", "scores", "labels"))
    boxes = torch.from_numpy(exported["boxes"]).double()
    scores = torch.from_numpy(exported["scores"]).double()
    labels = torch.from_numpy(exported["labels"]).double()
    if len(boxes) != len(ref_boxes):
        return len(ref_boxes), len(boxes)
    if len(boxes) == 0:
        return 0.0, 0.0
    distance = (boxes[:, None, :] - ref_boxes[None, :, :]).abs().amax(-1)  # [D_exported, D_reference]
    distance = distance.masked_fill(labels[:, None] != ref_labels[None, :], float("inf"))
    box_delta, nearest = distance.min(1)
    score_delta = (scores - ref_scores[nearest]).abs()
    return float(box_delta.max()), float(score_delta.max())


def check_export(
    run: ExportedRun,
    wrapper: ExportedDetector,
    images: Sequence[Tensor],
    progress: Optional[Callable[[int, int], None]] = None,
) -> ExportCheck:
    """Compare ``run`` with the PyTorch model ``wrapper`` on ``images`` (float ``[3, H, W]``); ``progress(done,
    total)`` is called as the check goes (before each image after the first)."""
    check = ExportCheck()
    for index, image in enumerate(images):
        if progress is not None and index:
            progress(index, len(images))
        with torch.no_grad():
            reference = dict(zip(wrapper.output_names, wrapper(image)))
        exported = dict(zip(wrapper.output_names, run(image)))
        deltas = compare_detections(reference, exported)
        check.image_sizes.append((int(image.shape[1]), int(image.shape[2])))
        check.detections += len(reference["boxes"])
        if isinstance(deltas[0], int):
            size = "x".join(str(side) for side in check.image_sizes[-1])
            check.count_mismatches.append(f"image {index} ({size}): PyTorch {deltas[0]}, exported {deltas[1]}")
            check.max_box_delta = check.max_score_delta = float("inf")
            continue
        check.max_box_delta = max(check.max_box_delta, deltas[0])
        check.max_score_delta = max(check.max_score_delta, deltas[1])
    return check


def check_image_sizes(min_size: int, max_size: int) -> list[tuple[int, int]]:
    """Three image sizes around the model's resize range, of different aspect ratios and parities, so that a
    graph that only works for the size it was recorded on fails the check."""
    side = max(16, int(min_size))
    long_side = min(int(max_size), int(side * 1.3)) | 1
    return [(side, long_side), (long_side, side), (int(side * 0.8) | 1, int(side * 0.8) + 1)]


def sweep_image_sizes(low: int, high: int) -> list[tuple[int, int]]:
    """Every height and every width from ``low`` to ``high`` (inclusive), each three times: the squares, and two
    pairings of each side with another by a stride co-prime with the range, one the transpose of the other (so each
    side is once the shorter, once the longer). ``3·(high - low + 1)`` sizes."""
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= low <= high, got {low}..{high}")
    count = high - low + 1
    stride = next(k for k in range(max(1, count * 3 // 8), count + 1) if math.gcd(k, count) == 1)
    paired = [(low + i, low + (i * stride + count // 2) % count) for i in range(count)]
    return [(side, side) for side in range(low, high + 1)] + paired + [(w, h) for h, w in paired]


def resized_check_images(images: Sequence[Tensor], sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """One image per size: ``images`` taken in turn (cycled), each resized bilinearly to its size."""
    return [
        torch.nn.functional.interpolate(images[i % len(images)][None], size=size, mode="bilinear")[0]
        for i, size in enumerate(sizes)
    ]


def synthetic_check_images(sizes: Sequence[tuple[int, int]], seed: int = 0) -> list[Tensor]:
    """Smooth random images (low-frequency noise upsampled) of ``sizes``: inputs with structure for the check
    when the user gives none."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for height, width in sizes:
        coarse = torch.rand(1, 3, max(2, height // 8), max(2, width // 8), generator=generator)
        images.append(torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")[0])
    return images


@dataclass
class ExportReport:
    """What :func:`export_checkpoint` wrote and how the export compared with PyTorch."""

    output: Path
    format: str
    arch: str
    attention_paths: dict[str, str]
    output_names: tuple[str, ...]
    score_threshold: float
    check: ExportCheck


def export_checkpoint(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    fmt: str = "onnx",
    overrides: Optional[Sequence[str]] = None,
    score_threshold: Optional[float] = None,
    check_images: Sequence[str | os.PathLike] = (),
    sweep: Optional[tuple[int, int]] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> ExportReport:
    """Export a detection checkpoint to ``output`` and check it against PyTorch on a few images.

    Args:
        checkpoint: a detection checkpoint written by training.
        output: the file to write (``.onnx`` or ``.pt`` by convention).
        fmt: ``"onnx"`` or ``"torchscript"``.
        overrides: ``key=value`` overrides of the stored config (e.g. ``model.min_size=800``).
        score_threshold: the exported graph's candidate threshold (default: the detector's ``score_thresh``,
            ``model.detector_kwargs.score_thresh``, 0.05 unless set).
        check_images: image files for the check (default: three synthetic images of different sizes).
        sweep: ``(low, high)``: check on every height and every width from ``low`` to ``high``
            (:func:`sweep_image_sizes`), the check images (or synthetic ones) resized to each size in turn.
        progress: ``progress(done, total)`` as the check goes (see :func:`check_export`).

    Raises ValueError (a classification checkpoint, an unknown format), ImageReadError (a check image),
    MissingExtra (ONNX without the ``onnx`` extra) before anything is written.
    """
    from sasa_det.engine.inference.loading import load_module
    from sasa_det.engine.inference.predictor import image_to_tensor

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {EXPORT_FORMATS}")
    if fmt == "onnx":
        require_extra("onnx", "onnx", "ONNX export")
        require_extra("onnxruntime", "onnx", "Checking an ONNX export")
    images = [image_to_tensor(path) for path in check_images]
    module, cfg = load_module(checkpoint, overrides)
    if cfg.task != "detection":
        raise ValueError(f"export takes detection checkpoints; {checkpoint} is a {cfg.task!r} checkpoint")
    detector = module.model.eval()
    if score_threshold is not None:
        detector.score_thresh = float(score_threshold)  # RetinaNet
        if getattr(detector, "roi_heads", None) is not None:
            detector.roi_heads.score_thresh = float(score_threshold)  # Faster / Mask R-CNN
    threshold = getattr(detector, "score_thresh", None)
    if threshold is None:
        threshold = detector.roi_heads.score_thresh
    if not images:
        # torchvision resizes to the last min_size in eval mode
        images = synthetic_check_images(check_image_sizes(detector.transform.min_size[-1], detector.transform.max_size))
    example = images[0]
    if sweep is not None:
        images = resized_check_images(images, sweep_image_sizes(*sweep))
    paths = export_detector(detector, output, fmt, example)
    wrapper = ExportedDetector(detector)
    check = check_export(load_exported(output, fmt), wrapper, images, progress)
    if check.detections == 0:
        logger.warning(
            "the check compared no detection (none scored above %g on the check images); "
            "give --images with objects or a lower --score-threshold",
            threshold,
        )
    return ExportReport(Path(output), fmt, str(cfg.model.arch), paths, wrapper.output_names, float(threshold), check)
