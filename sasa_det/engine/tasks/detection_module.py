"""``DetectionModule``: trains and validates a torchvision detector built by ``sasa_det.detectors``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch import nn

from sasa_det.evaluation.options import SCORE_THRESHOLD
from sasa_det.optim import OptimSettings, configure_optimization

__all__ = ["DetectionModule"]

# Metrics logged under short names besides their full "val/<iou>/<metric>" names.
_SHORT_NAMES = {"bbox/AP": "val/mAP", "bbox/AP50": "val/AP50", "bbox/AP75": "val/AP75", "segm/AP": "val/mask_mAP"}


class DetectionModule(pl.LightningModule):
    """Lightning wrapper of a RetinaNet / Faster R-CNN / Mask R-CNN (e.g. from :func:`sasa_det.detectors.build_detector`).

    Args:
        model: the detector, a torchvision detection model whose ``backbone.body`` is the feature extractor.
        optim: optimizer and schedule settings (:class:`~sasa_det.optim.OptimSettings`, or its fields as a mapping:
            what the checkpoint's hyper-parameters hold; default: its defaults).
        iou_types: COCO IoU types evaluated in validation (``"bbox"``, ``"segm"``).
        score_threshold: detections below this score are not evaluated.
        eval_backend: COCO evaluation backend (:class:`sasa_det.evaluation.CocoEvaluator`'s ``backend``).
        class_names: names of the foreground classes, index ``label - 1`` (stored in the checkpoint so that
            predictions drawn from it carry names).

    The settings are saved as the checkpoint's hyper-parameters; the model is described by the experiment
    config, stored once beside them (``sasa_det.engine.run.checkpoints``), from which ``load_module`` rebuilds it.

    Batches are ``(images, targets)`` as produced by ``sasa_det.data``: ``images`` a list of ``[3, H, W]``
    float tensors in 0..1, ``targets`` a list of dicts with ``boxes [N, 4]`` xyxy, ``labels [N]`` (1..K),
    optional ``masks [N, H, W]`` and ``image_id``.

    Training logs every loss term as ``train/<name>`` and their sum as ``train/loss`` (the learning rate is
    logged by Lightning's ``LearningRateMonitor``). Validation feeds a
    :class:`sasa_det.evaluation.CocoEvaluator` (built from the datamodule's ``val_dataset``, or set with
    :meth:`set_evaluation_dataset`) and logs every COCO metric as ``val/<iou_type>/<metric>`` plus the short
    names ``val/mAP`` (bbox AP), ``val/AP50``, ``val/AP75`` and ``val/mask_mAP`` (segm AP), and
    ``val/num_images``, the number of distinct images predicted over all ranks (a check that distributed
    validation covered the set exactly once). The evaluator gathers all ranks' predictions and broadcasts one
    result, so every rank logs the same numbers; they are logged with ``sync_dist=True, reduce_fx="max"``,
    which leaves identical values unchanged. The COCO pass of the pre-training sanity check is skipped.
    """

    def __init__(
        self,
        model: nn.Module,
        optim: OptimSettings | Mapping[str, Any] | None = None,
        iou_types: Sequence[str] = ("bbox",),
        score_threshold: float = SCORE_THRESHOLD,
        class_names: Optional[Sequence[str]] = None,
        eval_backend: str = "auto",
    ):
        super().__init__()
        settings = OptimSettings(**optim) if isinstance(optim, Mapping) else optim or OptimSettings()
        names = [str(n) for n in class_names] if class_names is not None else None
        self.save_hyperparameters(
            {
                "optim": asdict(settings),
                "iou_types": list(iou_types),
                "score_threshold": float(score_threshold),
                "class_names": names,
                "eval_backend": str(eval_backend),
            }
        )
        self.optim_settings = settings
        self.class_names = names
        self.iou_types = tuple(iou_types)
        self.score_threshold = float(score_threshold)
        self.eval_backend = str(eval_backend)
        self.model = model
        #: test-time augmentation run by validation and ``forward`` instead of ``model`` (None: plain inference)
        self.test_time_augmentation = None
        self.evaluator = None
        self.last_metrics: Optional[dict[str, float]] = None

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Predictions for a list of ``[3, H, W]`` images in eval mode (boxes in the images' coordinates), through
        the test-time augmentation when one is set."""
        return (self.test_time_augmentation or self.model)(images)

    def set_test_time_augmentation(self, options) -> None:
        """Run validation and ``forward`` on the views of :class:`~sasa_det.evaluation.TtaOptions` ``options``
        (``None``: plain inference again)."""
        from sasa_det.evaluation import TestTimeAugmentation

        self.test_time_augmentation = None if options is None else TestTimeAugmentation(self.model, options)

    # ------------------------------------------------------------------ evaluation set-up
    def set_evaluation_dataset(self, dataset) -> None:
        """Build the COCO evaluator from a ``CocoDetectionDataset`` (its ``coco`` and ``label_to_category``)."""
        from sasa_det.evaluation import CocoEvaluator

        self.evaluator = CocoEvaluator(
            dataset.coco,
            dataset.label_to_category,
            iou_types=self.iou_types,
            score_threshold=self.score_threshold,
            backend=self.eval_backend,
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
        return total

    def configure_optimizers(self):
        """Optimizer and per-step schedule (:func:`sasa_det.optim.configure_optimization`); the
        backbone body gets ``optim.backbone_lr_mult``."""
        batch_size = getattr(self.trainer.datamodule, "batch_size", 1)
        return configure_optimization(
            self.model, self.optim_settings, self.trainer, batch_size, backbone=self.model.backbone.body
        )

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
        outputs = self(images)
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
