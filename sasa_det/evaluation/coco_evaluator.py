"""COCO evaluation of detector outputs with COCOeval, safe under torch.distributed.

The COCOeval numbers come from one of three libraries that give the same arrays (``eval.backend``,
:mod:`sasa_det.evaluation.coco_backends`): ``"auto"`` (the default) takes hotcoco (Rust) where it is
installed, else faster-coco-eval, else pycocotools, and logs which one runs.

Predictions arrive as torchvision detector outputs in original-image coordinates with contiguous labels;
each batch is converted at once into columns (:class:`DetectionColumns`: image id, category id, xywh box
and score per detection; masks thresholded where they are and RLE-encoded as the batch arrives), which is
what is kept and gathered. hotcoco reads the columns as arrays; COCO result dicts are made only for the
other backends and when asked (:meth:`CocoEvaluator.detections_json`, the results JSON).

Evaluation covers only the images that were predicted (``COCOeval.params.imgIds``): a validation
run limited to a few batches (e.g. Lightning's sanity check or ``limit_val_batches``) then scores
those images instead of counting every unseen image's objects as missed. Official numbers need
every image of the split to be predicted.

Under ``torch.distributed`` every rank calls :meth:`CocoEvaluator.compute`; predictions of all
ranks are gathered, images seen more than once (``DistributedSampler`` pads the last batch by
repeating images) keep their first set of detections, rank 0 runs COCOeval, and the metrics are
broadcast so every rank returns (and can log) the same numbers.

Metric values are COCOeval's: ``-1`` where an area range has no ground truth at all.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pycocotools.coco import COCO

from sasa_det.evaluation.coco_backends import (
    COCO_BACKENDS,
    CocoEvalResult,
    GroundTruthCache,
    resolve_backend,
    run_cocoeval,
)
from sasa_det.evaluation.detection_columns import (
    DetectionColumns,
    RankResults,
    coco_result_dicts,
    columns_from_predictions,
    concatenate_columns,
    merge_rank_results,
    sorted_by_image,
)
from sasa_det.evaluation.options import IOU_TYPES, SCORE_THRESHOLD, EvalOptions

logger = logging.getLogger(__name__)

__all__ = [
    "COCO_BACKENDS",
    "IOU_TYPES",
    "STAT_NAMES",
    "CocoEvaluator",
    "EvalOptions",
]

#: Names of COCOeval.stats entries, in order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class CocoEvaluator:
    """Accumulate predictions over a validation pass and compute COCO metrics.

    Args:
        coco_gt: ground truth (``dataset.coco`` of the validation :class:`CocoDetectionDataset`).
        label_to_category: contiguous label (1..K) -> COCO category id.
        iou_types: any of ``"bbox"``, ``"segm"`` (segm needs ``masks`` in the predictions).
        score_threshold: detections with a lower score are not kept (COCO practice: 0.05).
        mask_threshold: mask probabilities above this are foreground (torchvision practice: 0.5).
        backend: the COCOeval library, one of :data:`COCO_BACKENDS` (``"auto"``: the fastest exact one
            installed); all give the same metrics. The one used per IoU type is :attr:`backends`.

    Usage::

        evaluator.update(model(images), [t["image_id"] for t in targets])  # per batch
        metrics = evaluator.compute()       # {"bbox/AP": ..., "bbox/AP50": ..., "segm/AP": ...}
        print(evaluator.summary_text()); print(evaluator.per_class_table())
        evaluator.reset()
    """

    def __init__(
        self,
        coco_gt: COCO,
        label_to_category: Mapping[int, int],
        iou_types: Sequence[str] = ("bbox",),
        score_threshold: float = SCORE_THRESHOLD,
        mask_threshold: float = 0.5,
        backend: str = "auto",
    ) -> None:
        iou_types = tuple(iou_types)
        if not iou_types or any(t not in IOU_TYPES for t in iou_types) or len(set(iou_types)) != len(iou_types):
            raise ValueError(f"iou_types must be distinct entries of {IOU_TYPES}, got {iou_types!r}.")
        unknown = sorted(c for c in label_to_category.values() if c not in coco_gt.cats)
        if unknown:
            raise ValueError(
                f"label_to_category maps to category ids {unknown} that the ground truth does not define "
                f"(it has {sorted(coco_gt.cats)}); use the mapping of the dataset that owns coco_gt."
            )
        self.coco_gt = coco_gt
        self.label_to_category = {int(k): int(v) for k, v in label_to_category.items()}
        self.iou_types = iou_types
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.backend = backend
        #: the library that evaluates each IoU type (``backend`` resolved)
        self.backends = {t: resolve_backend(backend, t) for t in iou_types}
        logger.info(
            "COCO evaluation with %s (eval.backend=%s).",
            ", ".join(f"{v} ({k})" for k, v in self.backends.items()),
            backend,
        )
        self._ground_truth = GroundTruthCache(coco_gt)  # each backend's COCO object, built once
        self.reset()

    # ------------------------------------------------------------------ accumulation
    def reset(self) -> None:
        """Forget all predictions and results."""
        self._image_ids: list[int] = []
        self._seen: set[int] = set()
        self._chunks: list[DetectionColumns] = []
        self._merged: tuple[list[int], DetectionColumns] | None = None
        self.duplicates = 0
        self._metrics: dict[str, float] | None = None
        self._summaries: dict[str, str] = {}
        self._per_class: dict[str, list[dict[str, Any]]] = {}
        self._evaluations: dict[str, CocoEvalResult] = {}

    def update(self, predictions: Sequence[Mapping[str, torch.Tensor]], image_ids: Iterable[int]) -> None:
        """Add one batch of predictions.

        Args:
            predictions: per image ``boxes`` float [N, 4] (xyxy, original image pixels), ``scores``
                [N], ``labels`` int [N] (1..K) and, for ``"segm"``, ``masks`` [N, 1, H, W] (or
                [N, H, W]) probabilities at the original image size (H, W).
            image_ids: the COCO image id of each prediction. An image already seen keeps its first
                predictions (the later ones are counted in ``duplicates``).

        The batch is converted at once (:func:`columns_from_predictions`): one array each of image ids,
        category ids, boxes (xywh) and scores; masks thresholded where they are, on their device, and
        RLE-encoded per image, so that no binary mask is kept.
        """
        image_ids = [int(i) for i in image_ids]
        if len(image_ids) != len(predictions):
            raise ValueError(
                f"got {len(predictions)} predictions but {len(image_ids)} image ids; pass one id per image."
            )
        segm = "segm" in self.iou_types
        keys = ("boxes", "scores", "labels") + (("masks",) if segm else ())
        batch: dict[int, Mapping[str, torch.Tensor]] = {}
        for prediction, image_id in zip(predictions, image_ids):
            if image_id not in self.coco_gt.imgs:
                raise ValueError(
                    f"image id {image_id} is not in the ground truth; predictions must come from the dataset whose "
                    "'coco' object was given to the evaluator."
                )
            if image_id in self._seen or image_id in batch:
                self.duplicates += 1
                continue
            for key in keys:
                if key not in prediction:
                    raise ValueError(f"prediction for image id {image_id} has no {key!r} (keys: {sorted(prediction)}).")
            batch[image_id] = (
                dict(prediction, masks=self._checked_masks(prediction["masks"], image_id)) if segm else prediction
            )
        if batch:
            self._chunks.append(
                columns_from_predictions(
                    list(batch.values()),
                    list(batch),
                    self.label_to_category,
                    self.score_threshold,
                    self.mask_threshold if segm else None,
                )
            )
            self._image_ids += list(batch)
            self._seen.update(batch)
        self._merged = None
        self._metrics = None

    def _checked_masks(self, masks: torch.Tensor, image_id: int) -> torch.Tensor:
        """``masks`` as [N, H, W] at the image's size; ValueError naming the image otherwise."""
        info = self.coco_gt.imgs[image_id]
        if masks.dim() == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if masks.dim() != 3 or (info.get("height"), info.get("width")) != tuple(masks.shape[-2:]):
            raise ValueError(
                f"masks for image id {image_id} have shape {tuple(masks.shape)}; expected [N, 1, H, W] at the "
                f"original image size H={info.get('height')}, W={info.get('width')}."
            )
        return masks

    def _local_results(self) -> RankResults:
        """This rank's images and detections (one array each)."""
        return RankResults(
            list(self._image_ids), concatenate_columns(self._chunks, "segm" in self.iou_types), self.duplicates
        )

    # ------------------------------------------------------------------ evaluation
    def compute(self) -> dict[str, float]:
        """Evaluate everything accumulated so far; returns ``{"<iou_type>/<stat>": value}``.

        Under torch.distributed every rank must call it (collective operations); all ranks return
        the same dict.
        """
        local = self._local_results()
        self._chunks = [local.detections]  # concatenated once
        with_masks = "segm" in self.iou_types
        if _distributed():
            gathered: list[RankResults | None] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
            image_ids, detections, duplicates = merge_rank_results(gathered, with_masks)
            self._merged = (image_ids, detections)
            payload = [self._evaluate(image_ids, detections, duplicates) if dist.get_rank() == 0 else None]
            dist.broadcast_object_list(payload, src=0)
            self._metrics, self._summaries, self._per_class = payload[0]
        else:
            image_ids, detections, duplicates = merge_rank_results([local], with_masks)
            self._merged = (image_ids, detections)
            self._metrics, self._summaries, self._per_class = self._evaluate(image_ids, detections, duplicates)
        return dict(self._metrics)

    def _evaluate(
        self, image_ids: list[int], detections: DetectionColumns, duplicates: int
    ) -> tuple[dict[str, float], dict[str, str], dict[str, list[dict[str, Any]]]]:
        if duplicates:
            logger.info("CocoEvaluator: ignored %d repeated predictions of already-seen images.", duplicates)
        metrics: dict[str, float] = {}
        summaries: dict[str, str] = {}
        per_class: dict[str, list[dict[str, Any]]] = {}
        self._evaluations = {}
        if not image_ids:
            logger.warning("CocoEvaluator.compute() called without any predictions; all metrics are -1.")
            for iou_type in self.iou_types:
                metrics.update({f"{iou_type}/{name}": -1.0 for name in STAT_NAMES})
                summaries[iou_type] = "no predictions"
                per_class[iou_type] = []
            return metrics, summaries, per_class
        # COCOeval reads each image's detections in the order given (ties in score keep it); the order of the
        # images does not matter, so the columns go as gathered
        for iou_type in self.iou_types:
            result = run_cocoeval(self.backends[iou_type], self._ground_truth, detections, iou_type, sorted(image_ids))
            self._evaluations[iou_type] = result
            summaries[iou_type] = result.summary
            metrics.update({f"{iou_type}/{name}": float(v) for name, v in zip(STAT_NAMES, result.stats)})
            per_class[iou_type] = self._per_class_ap(result)
        return metrics, summaries, per_class

    def _per_class_ap(self, result: CocoEvalResult) -> list[dict[str, Any]]:
        # precision: [T iou thresholds, R recall points, K categories, A area ranges, M max dets]
        precision = result.precision
        rows = []
        for k, category_id in enumerate(result.category_ids):
            row = {"category_id": category_id, "name": str(self.coco_gt.cats[category_id].get("name", category_id))}
            for key, t in (("AP", None), ("AP50", 0.5), ("AP75", 0.75)):
                values = (
                    precision[:, :, k, 0, -1]
                    if t is None
                    else precision[np.isclose(result.iou_thresholds, t), :, k, 0, -1]
                )
                valid = values[values > -1]
                row[key] = float(valid.mean()) if valid.size else float("nan")
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ reports
    def _require_computed(self) -> None:
        if self._metrics is None:
            raise RuntimeError("call compute() first.")

    @property
    def metrics(self) -> dict[str, float]:
        """The result of the last :meth:`compute`."""
        self._require_computed()
        return dict(self._metrics)

    def summary_text(self) -> str:
        """pycocotools' printed summary of each iou type (captured, not printed)."""
        self._require_computed()
        return "\n".join(f"IoU type: {t}\n{self._summaries[t]}" for t in self.iou_types)

    def per_class_ap(self, iou_type: str = "bbox") -> list[dict[str, Any]]:
        """Per-category ``{"category_id", "name", "AP", "AP50", "AP75"}`` (area all, 100 detections);
        NaN for a category without ground truth in the evaluated images."""
        self._require_computed()
        self._check_type(iou_type)
        return [dict(r) for r in self._per_class[iou_type]]

    def per_class_table(self, iou_type: str | None = None) -> str:
        """Markdown table of per-class AP/AP50/AP75 (in %) for one or (``None``) all iou types."""
        self._require_computed()
        lines = []
        for t in [iou_type] if iou_type else self.iou_types:
            self._check_type(t)
            lines += [f"| {t} class | id | AP | AP50 | AP75 |", "| --- | ---: | ---: | ---: | ---: |"]
            for r in self._per_class[t]:
                cells = [" - " if math.isnan(r[k]) else f"{100 * r[k]:.1f}" for k in ("AP", "AP50", "AP75")]
                lines.append(f"| {r['name']} | {r['category_id']} | " + " | ".join(cells) + " |")
            lines.append("")
        return "\n".join(lines).rstrip("\n")

    def precision(self, iou_type: str = "bbox") -> np.ndarray:
        """COCOeval's precision array [T=10 IoUs, R=101 recalls, K classes, A=4 areas, M=3 max dets]
        (-1 where undefined). Available on the rank that ran COCOeval (rank 0)."""
        self._require_computed()
        self._check_type(iou_type)
        return self._evaluation(iou_type).precision

    def recall(self, iou_type: str = "bbox") -> np.ndarray:
        """COCOeval's recall array [T=10 IoUs, K classes, A=4 areas, M=3 max dets] (-1 where undefined), on rank 0."""
        self._require_computed()
        self._check_type(iou_type)
        return self._evaluation(iou_type).recall

    def _evaluation(self, iou_type: str) -> CocoEvalResult:
        if iou_type not in self._evaluations:
            raise RuntimeError("precision arrays exist only on the rank that evaluated (rank 0) and after predictions.")
        return self._evaluations[iou_type]

    def coco_eval(self, iou_type: str = "bbox") -> Any:
        """The backend's evaluated ``COCOeval`` object of the last :meth:`compute` (rank 0), e.g. hotcoco's
        for its diagnostics (``tide_errors``, ``confusion_matrix``)."""
        self._require_computed()
        self._check_type(iou_type)
        return self._evaluation(iou_type).coco_eval

    def pr_curves(self, iou_type: str = "bbox", iou_threshold: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-class precision/recall curves at one IoU threshold (area all, 100 detections):
        ``{class name: (recall [101], precision [101])}``, undefined points dropped."""
        precision = self.precision(iou_type)
        result = self._evaluations[iou_type]
        t = np.flatnonzero(np.isclose(result.iou_thresholds, iou_threshold))
        if t.size == 0:
            raise ValueError(f"iou_threshold must be one of {result.iou_thresholds.tolist()}, got {iou_threshold}.")
        recall = result.recall_thresholds
        curves = {}
        for k, category_id in enumerate(result.category_ids):
            p = precision[t[0], :, k, 0, -1]
            valid = p > -1
            curves[str(self.coco_gt.cats[category_id].get("name", category_id))] = (recall[valid], p[valid])
        return curves

    def detections_json(self, iou_type: str = "bbox") -> list[dict[str, Any]]:
        """COCO result dicts of one iou type (after :meth:`compute`: of all ranks, de-duplicated), ordered by
        image id and, within an image, as the detector gave them; ready for ``json.dump`` and ``COCO.loadRes``.
        Made on each call (the evaluation itself needs none)."""
        self._check_type(iou_type)
        if self._merged is not None:
            detections = self._merged[1]
        else:
            detections = concatenate_columns(self._chunks, "segm" in self.iou_types)
        return coco_result_dicts(sorted_by_image(detections), iou_type)

    def _check_type(self, iou_type: str) -> None:
        if iou_type not in self.iou_types:
            raise ValueError(f"iou_type {iou_type!r} was not evaluated; this evaluator has {self.iou_types}.")

    def kept_bytes(self) -> int:
        """Bytes of the detections the evaluator holds (arrays and RLE strings): its memory over a pass."""
        chunks = [self._merged[1]] if self._merged is not None else self._chunks
        arrays = sum(a.nbytes for chunk in chunks for a in chunk[:4])
        return arrays + sum(len(m["counts"]) for chunk in chunks for m in chunk.masks or ())

    @property
    def num_images(self) -> int:
        """Number of distinct images predicted on this rank."""
        return len(self._image_ids)
