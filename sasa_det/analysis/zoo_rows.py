"""The detector zoo's rows: each a list of config overrides of ``configs/zoo/shapes_hard.yaml`` (plain data).

The base config is a CPU-sized RetinaNet with the papers' structure (a quarter-width ResNet-26, 64-channel conv
FPN and heads, 128-px images); a row changes only what it names, so every row trains at one budget on the same
hard shapes set (``tools/benchmark.py zoo``).
"""

from __future__ import annotations

__all__ = ["ZOO_ROWS"]

_SASA_STAGES = "model.backbone.stage_ops=[sasa,sasa,sasa,sasa]"
#: The R-CNNs scaled to CPU like the rest of the model: sampling sized for 128-px images with a few objects
#: (torchvision's 2000 proposals and 512 sampled RoIs per image are sized for COCO) and RoI heads at a quarter of
#: torchvision's widths, as the 64-channel FPN is a quarter of 256 (box head 256 wide, not 1024; mask head 64
#: channels, not 256). With torchvision's sampling and widths a CPU step of Mask R-CNN cost ~20 conv RetinaNet
#: steps; with these, about 4 (docs/zoo.md).
_RCNN_CPU = [
    "model.head_norm=null",
    "model.backbone.stage_ops=[conv,conv,conv,conv]",
    "model.detector_kwargs.rpn_post_nms_top_n_train=500",
    "model.detector_kwargs.box_batch_size_per_image=64",
    "model.box_head_fc_dim=256",
    "model.mask_head_conv_dim=64",
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
        "about": "Faster R-CNN, conv ResNet-26 (500 proposals, 64 sampled RoIs per image, 256-wide box head)",
        "overrides": ["model.arch=faster_rcnn", *_RCNN_CPU],
    },
    "mask_rcnn": {
        "about": "Mask R-CNN, conv ResNet-26 (as Faster R-CNN, 64-channel mask head)",
        "overrides": ["model.arch=mask_rcnn", *_RCNN_CPU],
    },
}
