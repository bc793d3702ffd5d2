"""The sections of a detection experiment that the detection task owns: ``model`` and ``data``, and the rules
that span sections of a detection config.

``model`` is the detector (:class:`~sasa_det.detectors.DetectorOptions`) with its class count, backbone,
SASA layers and initial weights; ``data`` the COCO-format data (:class:`~sasa_det.data.CocoDataOptions`) or
the synthetic shapes set that fills its paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from sasa_det.backbones.options import ResNetOptions
from sasa_det.choices import OptionError
from sasa_det.data.loading.options import CocoDataOptions
from sasa_det.data.shapes.options import ShapesOptions
from sasa_det.detectors.options import DetectorOptions
from sasa_det.layers import SasaOptions

__all__ = ["DetectionDataOptions", "DetectionModelOptions", "ShapesConfig", "check_detection_experiment"]


@dataclass
class DetectionModelOptions(DetectorOptions):
    """Detector: the detection options (:class:`~sasa_det.detectors.DetectorOptions`: ``arch``, ``fpn``, ``head``,
    ...), its backbone and the SASA layers' options: the ``model`` section."""

    #: foreground classes; null = taken from the training dataset
    num_classes: Optional[int] = None
    #: backbone preset and options
    backbone: ResNetOptions = field(default_factory=ResNetOptions)
    #: every SASA layer: backbone, attention FPN, attention heads
    sasa: SasaOptions = field(default_factory=SasaOptions)
    #: weights to start from (no optimizer state): our checkpoint, a state dict, torchvision/timm ResNet weights,
    #: or a short name: ``demo`` (the demo run's best checkpoint), ``zoo:<row>[/seed<k>]`` (a zoo run's);
    #: mismatched shapes are re-initialised
    init_from: Optional[str] = None


#: The ``data.shapes`` section's old name; the options live with the generator.
ShapesConfig = ShapesOptions


@dataclass
class DetectionDataOptions(CocoDataOptions):
    """Detection data: COCO-format splits (:class:`~sasa_det.data.CocoDataOptions`: the four paths, loaders,
    augmentation, checks), or the synthetic shapes set that supplies the four paths: the ``data`` section."""

    #: when shapes.root is set it supplies the four COCO paths
    shapes: ShapesOptions = field(default_factory=ShapesOptions)


def check_detection_experiment(model: DetectionModelOptions, eval_options: Any, trainer: Any) -> None:
    """Rules that span sections of a detection config.

    * ``eval.tta`` merges boxes only: Mask R-CNN's masks are not merged.
    * ``trainer.deterministic=true`` with an op that has no deterministic CUDA backward fails here, not
      mid-step: the attention layers have deterministic paths (pooled AA's upsampling by matrices, the
      Triton SASA kernels without atomics); torchvision's RoIAlign, which Faster/Mask R-CNN use, has none.

    Raises:
        OptionError: naming the keys and what to set.
    """
    tta = eval_options.tta
    if model.arch == "mask_rcnn" and (list(tta.flips) != ["none"] or [float(s) for s in tta.scales] != [1.0]):
        raise OptionError(
            "eval.tta", "eval.tta merges boxes only; Mask R-CNN's masks are not merged: leave eval.tta at its default"
        )
    if not trainer.deterministic or model.arch == "retinanet" or str(trainer.accelerator) == "cpu":
        return
    if str(trainer.accelerator) == "auto":
        import torch

        if not torch.cuda.is_available():
            return
    raise OptionError(
        "trainer.deterministic",
        f"trainer.deterministic=true: model.arch={model.arch!r} uses torchvision's RoIAlign, whose CUDA backward "
        "has no deterministic implementation (torch would stop at the first step). Set trainer.deterministic=false, "
        "train on trainer.accelerator=cpu, or use model.arch=retinanet.",
    )
