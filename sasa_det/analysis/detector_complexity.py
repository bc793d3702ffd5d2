"""Parameters and FLOPs of detectors, beside the SASA paper's Table 2 (COCO RetinaNet, max side 640).

FLOPs follow :mod:`sasa_det.analysis.model_info` (multiply-add = 2; convolutions and linear layers measured by
``FlopCounterMode``, attention products added from each layer's ``attention_flops``) for the dense part of the
detector on one ``image_size × image_size`` input (the paper's TPU RetinaNet pads COCO images to 640×640): the
backbone, the pyramid and the heads (RetinaNet's class/box heads; for the R-CNNs only the RPN head, as the RoI
heads' cost depends on the number of proposals). Input normalisation, anchor generation, box decoding and NMS are
not counted, nor are normalisation layers, activations and pooling (as in the papers).

Where our counts differ from the paper's, :data:`PAPER_NOTES` says why as far as we can tell.
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sasa_det.analysis.model_info import FlopCount, ModelInfo, count_flops, count_parameters, format_table
from sasa_det.engine.tasks.detection import preset_detection_model

PAPER_IMAGE_SIZE = 640  # SASA paper, Sec. 4.2: max side 640
COCO_CLASSES = 80


@dataclass(frozen=True)
class PaperDetector:
    """One row of the SASA paper's Table 2: how to build it and the published size (None: not published)."""

    name: str
    build_kwargs: dict[str, Any]
    params_m: float | None
    flops_b: float | None


# SASA paper, Table 2 (RetinaNet on COCO): parameters (M) and FLOPs (B).
PAPER_DETECTORS = (
    PaperDetector("retinanet_resnet50", {"backbone": "resnet50"}, 33.4, 182.0),
    PaperDetector("retinanet_sasa_resnet50_convstem", {"backbone": "sasa_resnet50_convstem"}, 25.9, 173.0),
    PaperDetector("retinanet_sasa_resnet50", {"backbone": "sasa_resnet50"}, None, None),
    PaperDetector(
        "retinanet_sasa_resnet50_attention_fpn_heads",
        {"backbone": "sasa_resnet50", "fpn": "attention", "head": "attention"},
        22.0,
        110.0,
    ),
)

PAPER_NOTES = """\
Notes on the comparison with the SASA paper's Table 2 (80 COCO classes, one 640x640 image):
- The conv RetinaNet is exactly torchvision's retinanet_resnet50_fpn (same parameter count with 81 classes).
  Our models carry one extra, never-trained class logit (torchvision's index 0): 9*256*9 + 9 = 20.7 k parameters
  in a 3x3 class predictor, 2.3 k in a 1x1 one. The remaining +0.44 M parameters and +8.2 B FLOPs (+4.5 %) are
  not explained by the paper's text: P6 from C5 as in the original RetinaNet would add 4.1 M, a 90-way class
  head 0.19 M, both moving away. The conv-stem SASA row differs by about the same amounts (+0.42 M, +7.3 B),
  so the difference lies in the FPN/heads both rows share, not in the backbones.
- FLOPs: backbone + FPN + heads, convolutions and attention products (q.k, q.r, a.v; 12.3 B of the full
  attention detector); the paper does not say what it counts for detection.
- Full-attention detector (-2.4 M / -9.9 B): we read "a pointwise convolution at the end of the class and box
  heads" as the predictor itself (1x1 conv to A*K / A*4 outputs). Reading it as an extra 256->256 1x1 conv
  before torchvision's 3x3 predictors gives 21.3 M / 129 B instead, so neither reading matches both numbers.
"""


class _DenseDetectorPart(nn.Module):
    """The image-size-determined part of a detector: backbone + pyramid + dense heads.

    Forward: ``x [N, 3, H, W]`` (already normalised) → the dense heads' raw outputs.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: Tensor) -> Any:
        features = list(self.detector.backbone(x).values())
        if hasattr(self.detector, "rpn"):
            return self.detector.rpn.head(features)
        return self.detector.head(features)


def dense_detector_part(detector: nn.Module) -> nn.Module:
    """The part of ``detector`` whose cost the image size determines (see :class:`_DenseDetectorPart`)."""
    return _DenseDetectorPart(detector)


def measure_detector(
    name: str,
    arch: str = "retinanet",
    num_classes: int = COCO_CLASSES,
    image_size: int = PAPER_IMAGE_SIZE,
    paper_params_m: float | None = None,
    paper_flops_b: float | None = None,
    **build_kwargs: Any,
) -> ModelInfo:
    """Parameters (all, trainable or not) and dense-part FLOPs of ``preset_detection_model(arch, num_classes, ...)``.

    The detector is built with ``max_size=image_size`` and BatchNorm (``norm="bn"``, nothing frozen), so norm
    affine parameters count as parameters, as in the papers. FLOPs are for one ``image_size²`` image.
    """
    overrides = {"norm": "bn", "frozen_stages": 0, **build_kwargs.pop("backbone_overrides", {})}
    model = preset_detection_model(
        arch, num_classes, backbone_overrides=overrides, min_size=image_size, max_size=image_size, **build_kwargs
    ).eval()
    flops: FlopCount = count_flops(dense_detector_part(model), torch.zeros(1, 3, image_size, image_size))
    return ModelInfo(name, count_parameters(model), flops, image_size, paper_params_m, paper_flops_b)


def measure_paper_detectors(image_size: int = PAPER_IMAGE_SIZE, num_classes: int = COCO_CLASSES) -> list[ModelInfo]:
    """:func:`measure_detector` for every row of :data:`PAPER_DETECTORS` (paper values only at 640 / 80 classes)."""
    published = image_size == PAPER_IMAGE_SIZE and num_classes == COCO_CLASSES
    return [
        measure_detector(
            row.name,
            "retinanet",
            num_classes,
            image_size,
            row.params_m if published else None,
            row.flops_b if published else None,
            **row.build_kwargs,
        )
        for row in PAPER_DETECTORS
    ]


def paper_detector_table(
    image_size: int = PAPER_IMAGE_SIZE, num_classes: int = COCO_CLASSES, markdown: bool = False
) -> str:
    """The SASA paper's Table 2 detectors measured here, beside the published values, followed by the notes.

    Building and running the four ResNet-50 detectors on a 640×640 input takes a minute or two on a CPU.
    """
    return format_table(measure_paper_detectors(image_size, num_classes), markdown=markdown) + "\n\n" + PAPER_NOTES
