"""The detector zoo's rows: each a list of config overrides of ``configs/zoo/shapes_hard.yaml`` (plain data).

The base config is a CPU-sized RetinaNet with the papers' structure (a quarter-width ResNet-26, 64-channel conv
FPN and heads, 128-px images); a row changes only what it names, so every row trains at one budget on the same
hard shapes set (``tools/benchmark.py zoo``).
"""

from __future__ import annotations

__all__ = ["ZOO_ROWS"]

_SASA_STAGES = "model.backbone.stage_ops=[sasa,sasa,sasa,sasa]"
#: R-CNN sampling scaled to 128-px images with 1-8 objects (torchvision's defaults, 2000 proposals and 512 sampled
#: RoIs per image, are sized for COCO; with them a CPU step of Mask R-CNN costs ~17 conv RetinaNet steps)
_RCNN_CPU = [
    "model.head_norm=null",
    "model.detector_kwargs.rpn_post_nms_top_n_train=500",
    "model.detector_kwargs.box_batch_size_per_image=64",
]

#: row name -> ``{"about": one line for the table, "overrides": config overrides of the base config}``
ZOO_ROWS: dict[str, dict[str, object]] = {
    "conv": {
        "about": "RetinaNet, ResNet-26 with 3x3 convolutions in every stage",
        "overrides": ["model.backbone.stage_ops=[conv,conv,conv,conv]", "model.backbone.stem=conv"],
    },
    "sasa_convstem": {
        "about": "RetinaNet, SASA in every stage, conv stem (SASA Table 1 conv-stem + attention)",
        "overrides": [_SASA_STAGES, "model.backbone.stem=conv"],
    },
    "sasa_full": {
        "about": "RetinaNet, SASA in every stage and the attention stem (SASA full attention)",
        "overrides": [_SASA_STAGES, "model.backbone.stem=attention"],
    },
    "demo_mix": {
        "about": "RetinaNet, conv early, SASA in stage 3, AA in stage 4 (configs/shapes_demo.yaml)",
        "overrides": ["model.backbone.stage_ops=[conv,conv,sasa,aa]", "model.backbone.stem=conv"],
    },
    "aa": {
        "about": "RetinaNet, attention-augmented convolutions in stages 2-4 (AA Sec. 4.2)",
        "overrides": ["model.backbone.stage_ops=[conv,aa,aa,aa]", "model.backbone.stem=conv"],
    },
    "all_attention": {
        "about": "RetinaNet, full-attention backbone, attention FPN and heads (SASA Table 2)",
        "overrides": [
            _SASA_STAGES,
            "model.backbone.stem=attention",
            "model.fpn=attention",
            "model.head=attention",
            "model.sasa.mask_padding=true",  # the all-attention recipe (docs/zoo.md, "The all-attention detector")
        ],
    },
    "faster_rcnn": {
        "about": "Faster R-CNN, conv ResNet-26 (500 proposals, 64 sampled RoIs per image)",
        "overrides": [
            "model.arch=faster_rcnn",
            "model.head_norm=null",
            "model.backbone.stage_ops=[conv,conv,conv,conv]",
        ],
    },
    "mask_rcnn": {
        "about": "Mask R-CNN, conv ResNet-26 (500 proposals, 64 sampled RoIs per image)",
        "overrides": ["model.arch=mask_rcnn", *_RCNN_CPU, "model.backbone.stage_ops=[conv,conv,conv,conv]"],
    },
}
