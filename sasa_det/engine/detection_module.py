"""``DetectionModule``: trains and validates a torchvision detector built by ``sasa_det.detectors``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from sasa_det.config import config_from_dict, config_to_dict
from sasa_det.detectors import build_detector
from sasa_det.engine.optim import build_optimizer, build_scheduler, schedule_lengths, training_steps

__all__ = ["DetectionModule", "detector_kwargs", "iou_types_for"]

# Metrics logged under short names besides their full "val/<iou>/<metric>" names.
_SHORT_NAMES = {"bbox/AP": "val/mAP", "bbox/AP50": "val/AP50", "bbox/AP75": "val/AP75", "segm/AP": "val/mask_mAP"}


def detector_kwargs(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``build_detector`` keyword arguments from the ``model`` section of a config (a plain mapping)."""
    kwargs = dict(model_cfg)
    if kwargs.get("num_classes") is None:
        raise ValueError("model.num_classes is not set; set it or let the trainer take it from the dataset")
    kwargs["backbone_overrides"] = dict(kwargs.get("backbone_overrides") or {})
    kwargs["detector_kwargs"] = dict(kwargs.get("detector_kwargs") or {})
    return kwargs


def iou_types_for(config: Mapping[str, Any]) -> tuple[str, ...]:
    """IoU types to evaluate: ``eval.iou_types`` if given, else bbox (+ segm for Mask R-CNN)."""
    chosen = tuple(config["eval"]["iou_types"] or ())
    if chosen:
        return chosen
    return ("bbox", "segm") if config["model"]["arch"] == "mask_rcnn" else ("bbox",)


class DetectionModule(pl.LightningModule):
    """Lightning wrapper of a RetinaNet / Faster R-CNN / Mask R-CNN built from an experiment config.

    Args:
        config: the resolved experiment config (``DictConfig`` or the plain dict of
            :func:`sasa_det.config.config_to_dict`); ``model.num_classes`` must be set. It is stored as a plain
            dict in the checkpoint's hyper-parameters (key ``config``), so a checkpoint alone rebuilds the model
            (:func:`sasa_det.engine.runner.load_module`).
        class_names: names of the foreground classes, index ``label - 1`` (stored beside the config so that
            predictions drawn from a checkpoint carry names).

    Batches are ``(images, targets)`` as produced by ``sasa_det.data``: ``images`` a list of ``[3, H, W]``
    float tensors in 0..1, ``targets`` a list of dicts with ``boxes [N, 4]`` xyxy, ``labels [N]`` (1..K),
    optional ``masks [N, H, W]`` and ``image_id``.

    Training logs every loss term as ``train/<name>``, their sum as ``train/loss`` and the learning rate as
    ``train/lr``. Validation feeds a :class:`sasa_det.evaluation.CocoEvaluator` (built from the datamodule's
    ``val_dataset``, or set with :meth:`set_evaluation_dataset`) and logs every COCO metric as
    ``val/<iou_type>/<metric>`` plus the short names ``val/mAP`` (bbox AP), ``val/AP50``, ``val/AP75`` and
    ``val/mask_mAP`` (segm AP), and ``val/num_images``, the number of distinct images predicted over all ranks
    (a check that distributed validation covered the set exactly once). The evaluator gathers all ranks'
    predictions and broadcasts one result, so every rank logs the same numbers; they are logged with
    ``sync_dist=True, reduce_fx="max"``, which leaves identical values unchanged (and keeps Lightning's
    epoch-level distributed logging consistent). The COCO pass of the pre-training sanity check is skipped.
    """

    def __init__(self, config: Mapping[str, Any] | DictConfig, class_names: Optional[list[str]] = None):
        super().__init__()
        plain = config_to_dict(config) if isinstance(config, DictConfig) else dict(config)
        # Validate against the schema (unknown keys fail here too), then keep the plain dict.
        plain = config_to_dict(config_from_dict(plain))
        names = [str(n) for n in class_names] if class_names is not None else None
        self.save_hyperparameters({"config": plain, "class_names": names})
        self.config = plain
        self.class_names = names
        self.model = build_detector(**detector_kwargs(plain["model"]))
        self.iou_types = iou_types_for(plain)
        self.evaluator = None
        self.last_metrics: Optional[dict[str, float]] = None

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Predictions for a list of ``[3, H, W]`` images in eval mode (boxes in the images' coordinates)."""
        return self.model(images)

    # ------------------------------------------------------------------ evaluation set-up
    def set_evaluation_dataset(self, dataset) -> None:
        """Build the COCO evaluator from a ``CocoDetectionDataset`` (its ``coco`` and ``label_to_category``)."""
        from sasa_det.evaluation import CocoEvaluator

        self.evaluator = CocoEvaluator(
            dataset.coco,
            dataset.label_to_category,
            iou_types=self.iou_types,
            score_threshold=float(self.config["eval"]["score_threshold"]),
            backend=self.config["eval"].get("backend", "faster_coco_eval"),
        )

    def setup(self, stage: str) -> None:
        """Take the validation dataset from the attached datamodule when no evaluator was set."""
        if self.evaluator is not None or stage not in ("fit", "validate"):
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        dataset = getattr(datamodule, "val_dataset", None)
        if dataset is not None:
            self.set_evaluation_dataset(dataset)

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model(images, targets)
        total = sum(losses.values())
        if not torch.isfinite(total):
            values = {name: float(v.detach()) for name, v in losses.items()}
            raise FloatingPointError(
                f"non-finite training loss at step {self.global_step}: {values}; lower optim.lr, "
                "increase the warm-up or enable gradient clipping (optim.grad_clip)"
            )
        batch_size = len(images)
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), batch_size=batch_size)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=batch_size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], prog_bar=True, batch_size=batch_size)
        return total

    def configure_optimizers(self):
        optim_cfg = self.config["optim"]
        optimizer = build_optimizer(
            self.model,
            name=optim_cfg["name"],
            lr=float(optim_cfg["lr"]),
            momentum=float(optim_cfg["momentum"]),
            nesterov=bool(optim_cfg["nesterov"]),
            weight_decay=float(optim_cfg["weight_decay"]),
            betas=tuple(optim_cfg["betas"]),
        )
        scheduler = build_scheduler(optimizer, **schedule_lengths(optim_cfg, *training_steps(self.trainer)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        if self.evaluator is None:
            raise RuntimeError(
                "DetectionModule has no evaluator: use a datamodule with a val_dataset or call set_evaluation_dataset()"
            )
        self.evaluator.reset()
        self._seen_image_ids: list[int] = []

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        outputs = self.model(images)
        outputs = [{k: v.detach().cpu() for k, v in out.items()} for out in outputs]
        image_ids = [int(t["image_id"]) for t in targets]
        self.evaluator.update(outputs, image_ids)
        self._seen_image_ids.extend(image_ids)

    def _distinct_images_evaluated(self) -> int:
        """Number of distinct validation images predicted by all ranks together (DDP padding removed)."""
        seen = set(getattr(self, "_seen_image_ids", []))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, sorted(seen))
            seen = {i for ids in gathered for i in ids}
        return len(seen)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            # The sanity check sees a couple of batches only: its COCO numbers would be meaningless.
            self.evaluator.reset()
            return
        metrics = {key: float(value) for key, value in self.evaluator.compute().items()}
        logged = {f"val/{key}": value for key, value in metrics.items()}
        logged["val/num_images"] = float(self._distinct_images_evaluated())
        for key, short in _SHORT_NAMES.items():
            if key in metrics:
                logged[short] = metrics[key]
        for name, value in logged.items():
            self.log(name, value, prog_bar=name == "val/mAP", sync_dist=True, reduce_fx="max")
        self.last_metrics = logged

    # ------------------------------------------------------------------ prediction
    def predict_step(self, batch, batch_idx: int) -> list[dict[str, torch.Tensor]]:
        images = batch[0] if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], list) else batch
        return [{k: v.detach().cpu() for k, v in out.items()} for out in self.model(images)]
