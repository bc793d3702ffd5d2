"""COCO evaluation of detector outputs with COCOeval, safe under torch.distributed.

Two COCOeval backends give the same numbers: ``"faster_coco_eval"`` (the default; the
``faster-coco-eval`` package, whose per-image matching and accumulation are C++) and
``"pycocotools"`` (the original). The tests compare the two on the same detections.

Predictions arrive as torchvision detector outputs in original-image coordinates with contiguous
labels; each batch is converted at once into arrays per image (:class:`ImageDetections`: ``bbox`` in
xywh, the original category id, masks as compressed RLE), which is what is kept and gathered; the COCO
result dicts COCOeval reads are made once, when the metrics are computed (:func:`coco_result_dicts`).

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

import contextlib
import copy
import io
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

import numpy as np
import torch
import torch.distributed as dist
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sasa_det.choices import OptionError, choice
from sasa_det.evaluation.test_time_augmentation import TtaOptions

logger = logging.getLogger(__name__)

__all__ = [
    "COCO_BACKENDS",
    "IOU_TYPES",
    "STAT_NAMES",
    "CocoEvaluator",
    "EvalOptions",
    "ImageDetections",
    "coco_result_dicts",
    "merge_rank_results",
]

#: COCOeval implementations :class:`CocoEvaluator` can use (the first is the default).
COCO_BACKENDS = ("faster_coco_eval", "pycocotools")

#: Names of COCOeval.stats entries, in order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
#: What :class:`CocoEvaluator` can evaluate: boxes and instance masks.
IOU_TYPES = ("bbox", "segm")


@dataclass
class EvalOptions:
    """How detections are evaluated and drawn: the ``eval`` section of an experiment config (validation during
    training, ``tools/eval.py``, ``tools/predict.py``)."""

    #: detections below this score are not evaluated (COCO practice)
    #: detections below this score are not evaluated (COCO practice)
    score_threshold: float = 0.05
    #: "bbox" / "segm"; empty = bbox, plus segm for mask_rcnn
    iou_types: list[str] = choice(IOU_TYPES, default_factory=list)
    #: validation images drawn with predictions after training (0 = none)
    save_visualization: int = 4
    #: score threshold for drawn predictions
    draw_threshold: float = 0.5
    #: COCOeval implementation: "faster_coco_eval" | "pycocotools" (same metrics)
    backend: str = choice(COCO_BACKENDS, default=COCO_BACKENDS[0])
    #: after tools/eval.py, also write the confusion matrix and false positives by kind (errors/; eval.py --errors)
    error_analysis: bool = False
    #: IoU at which a detection matches a ground truth in the error analysis
    error_iou_threshold: float = 0.5
    #: detections below this score are left out of the error analysis (ultralytics draws its matrix at 0.25)
    error_score_threshold: float = 0.3
    #: test-time augmentation of tools/eval.py (reported beside plain inference) and tools/predict.py
    tta: TtaOptions = field(default_factory=TtaOptions)

    def validate(self) -> None:
        """The error analysis' thresholds lie in [0, 1]."""
        for name in ("error_iou_threshold", "error_score_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise OptionError(name, f"{{key}} must be in [0, 1], got {getattr(self, name)}")


class ImageDetections(NamedTuple):
    """One image's detections above the score threshold, as arrays (what :class:`CocoEvaluator` keeps)."""

    #: int64 [N] COCO category ids
    category_ids: np.ndarray
    #: float32 [N, 4] boxes as x, y, width, height in original image pixels
    boxes_xywh: np.ndarray
    #: float32 [N] scores
    scores: np.ndarray
    #: the N masks as compressed RLE dicts (``counts`` a str); None when masks are not evaluated
    masks: Optional[list[dict[str, Any]]]


# image id -> that image's detections
ImageResults = dict[int, ImageDetections]


def coco_result_dicts(results: ImageResults, image_ids: Sequence[int], iou_type: str) -> list[dict[str, Any]]:
    """COCO result dicts (``COCO.loadRes``'s input) of ``image_ids``' detections, in that order; new dicts on
    every call (``loadRes`` writes into them)."""
    chosen = [results[image_id] for image_id in image_ids]
    if not chosen:
        return []
    ids = np.repeat(np.asarray(image_ids, dtype=np.int64), [len(d.scores) for d in chosen]).tolist()
    categories = np.concatenate([d.category_ids for d in chosen]).tolist()
    scores = np.concatenate([d.scores for d in chosen]).tolist()
    if iou_type == "bbox":
        boxes = np.concatenate([d.boxes_xywh for d in chosen]).tolist()
        return [
            {"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(ids, categories, boxes, scores)
        ]
    masks = [rle for d in chosen for rle in d.masks]
    return [
        {"image_id": i, "category_id": c, "segmentation": m, "score": s}
        for i, c, m, s in zip(ids, categories, masks, scores)
    ]


def merge_rank_results(per_rank: Sequence[ImageResults]) -> tuple[ImageResults, int]:
    """Merge per-rank results, keeping the first occurrence of each image id.

    Args:
        per_rank: one ``{image_id: detections}`` dict per rank, in rank order.

    Returns:
        ``(merged, duplicates)``: the merged dict and how many repeated image ids were dropped.
    """
    merged: ImageResults = {}
    duplicates = 0
    for results in per_rank:
        for image_id, per_type in results.items():
            if image_id in merged:
                duplicates += 1
                continue
            merged[image_id] = per_type
    return merged, duplicates


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
        backend: the COCOeval implementation, one of :data:`COCO_BACKENDS`; both give the same metrics.

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
        score_threshold: float = 0.05,
        mask_threshold: float = 0.5,
        backend: str = COCO_BACKENDS[0],
    ) -> None:
        if backend not in COCO_BACKENDS:
            raise ValueError(f"backend must be one of {COCO_BACKENDS}, got {backend!r}.")
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
        self._backend_gt: COCO | None = None  # the ground truth as the backend's COCO object, built once
        self.reset()

    # ------------------------------------------------------------------ accumulation
    def reset(self) -> None:
        """Forget all predictions and results."""
        self._results: ImageResults = {}
        self._merged: ImageResults | None = None
        self.duplicates = 0
        self._metrics: dict[str, float] | None = None
        self._summaries: dict[str, str] = {}
        self._per_class: dict[str, list[dict[str, Any]]] = {}
        self._coco_evals: dict[str, COCOeval] = {}

    def update(self, predictions: Sequence[Mapping[str, torch.Tensor]], image_ids: Iterable[int]) -> None:
        """Add one batch of predictions.

        Args:
            predictions: per image ``boxes`` float [N, 4] (xyxy, original image pixels), ``scores``
                [N], ``labels`` int [N] (1..K) and, for ``"segm"``, ``masks`` [N, 1, H, W] (or
                [N, H, W]) probabilities at the original image size (H, W).
            image_ids: the COCO image id of each prediction. An image already seen keeps its first
                predictions (the later ones are counted in ``duplicates``).

        The batch is converted at once: one array each of boxes (xywh), scores and category ids per image
        (masks thresholded where they are, on their device, and RLE-encoded per image in one call); COCO
        result dicts are made only when they are needed (:meth:`compute`, :meth:`detections_json`).
        """
        image_ids = [int(i) for i in image_ids]
        if len(image_ids) != len(predictions):
            raise ValueError(
                f"got {len(predictions)} predictions but {len(image_ids)} image ids; pass one id per image."
            )
        batch: dict[int, Mapping[str, torch.Tensor]] = {}
        for prediction, image_id in zip(predictions, image_ids):
            if image_id not in self.coco_gt.imgs:
                raise ValueError(
                    f"image id {image_id} is not in the ground truth; predictions must come from the dataset whose "
                    "'coco' object was given to the evaluator."
                )
            if image_id in self._results or image_id in batch:
                self.duplicates += 1
                continue
            for key in ("boxes", "scores", "labels") + (("masks",) if "segm" in self.iou_types else ()):
                if key not in prediction:
                    raise ValueError(f"prediction for image id {image_id} has no {key!r} (keys: {sorted(prediction)}).")
            batch[image_id] = prediction
        if batch:
            self._results.update(self._to_image_detections(batch))
        self._merged = None
        self._metrics = None

    def _to_image_detections(self, batch: dict[int, Mapping[str, torch.Tensor]]) -> ImageResults:
        """The detections above the score threshold of each image of ``batch``, as arrays."""
        predictions = list(batch.values())
        counts = [int(p["scores"].numel()) for p in predictions]
        scores = torch.cat([p["scores"].detach().reshape(-1).float() for p in predictions]).cpu().numpy()
        boxes = torch.cat([p["boxes"].detach().reshape(-1, 4).float() for p in predictions]).cpu().numpy()
        labels = torch.cat([p["labels"].detach().reshape(-1) for p in predictions]).cpu().numpy().astype(np.int64)
        keep = scores >= self.score_threshold
        owner = np.repeat(np.arange(len(predictions)), counts)
        category_ids = self._category_ids(labels[keep], owner[keep], list(batch))
        boxes, scores = boxes[keep], scores[keep]
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        kept_counts = np.bincount(owner[keep], minlength=len(predictions))
        ends = np.cumsum(kept_counts)
        starts = ends - kept_counts
        kept_per_image = np.split(keep, np.cumsum(counts)[:-1])
        results: ImageResults = {}
        for i, image_id in enumerate(batch):
            first, last = int(starts[i]), int(ends[i])
            masks = None
            if "segm" in self.iou_types:
                masks = self._encode_masks(predictions[i]["masks"], torch.from_numpy(kept_per_image[i]), image_id)
            results[image_id] = ImageDetections(category_ids[first:last], xywh[first:last], scores[first:last], masks)
        return results

    def _category_ids(self, labels: np.ndarray, owner: np.ndarray, image_ids: list[int]) -> np.ndarray:
        """COCO category id of each label; an unmapped label is an error naming its image."""
        lookup = np.full(max(self.label_to_category) + 1, -1, dtype=np.int64)
        lookup[list(self.label_to_category)] = list(self.label_to_category.values())
        inside = (labels >= 0) & (labels < len(lookup))
        category_ids = np.where(inside, lookup[np.where(inside, labels, 0)], -1)
        if (category_ids < 0).any():
            bad = int(np.flatnonzero(category_ids < 0)[0])
            raise ValueError(
                f"prediction for image id {image_ids[owner[bad]]} has label {int(labels[bad])}, which label_to_category "
                f"does not map (known labels: {sorted(self.label_to_category)})."
            )
        return category_ids

    def _encode_masks(self, masks: torch.Tensor, keep: torch.Tensor, image_id: int) -> list[dict]:
        info = self.coco_gt.imgs[image_id]
        if masks.dim() == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if masks.dim() != 3 or (info.get("height"), info.get("width")) != tuple(masks.shape[-2:]):
            raise ValueError(
                f"masks for image id {image_id} have shape {tuple(masks.shape)}; expected [N, 1, H, W] at the "
                f"original image size H={info.get('height')}, W={info.get('width')}."
            )
        binary = (masks[keep.to(masks.device)] > self.mask_threshold).to(torch.uint8).cpu().numpy()
        if binary.shape[0] == 0:
            return []
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        for rle in rles:
            rle["counts"] = rle["counts"].decode("ascii")
        return rles

    # ------------------------------------------------------------------ evaluation
    def compute(self) -> dict[str, float]:
        """Evaluate everything accumulated so far; returns ``{"<iou_type>/<stat>": value}``.

        Under torch.distributed every rank must call it (collective operations); all ranks return
        the same dict.
        """
        if _distributed():
            gathered: list[tuple[ImageResults, int] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self._results, self.duplicates))
            self._merged, cross_rank_duplicates = merge_rank_results([g[0] for g in gathered])
            duplicates = cross_rank_duplicates + sum(g[1] for g in gathered)
            if dist.get_rank() == 0:
                payload = [self._evaluate(self._merged, duplicates)]
            else:
                payload = [None]
            dist.broadcast_object_list(payload, src=0)
            self._metrics, self._summaries, self._per_class = payload[0]
        else:
            self._merged = dict(self._results)
            self._metrics, self._summaries, self._per_class = self._evaluate(self._merged, self.duplicates)
        return dict(self._metrics)

    def _evaluate(
        self, merged: ImageResults, duplicates: int
    ) -> tuple[dict[str, float], dict[str, str], dict[str, list[dict[str, Any]]]]:
        if duplicates:
            logger.info("CocoEvaluator: ignored %d repeated predictions of already-seen images.", duplicates)
        image_ids = sorted(merged)
        metrics: dict[str, float] = {}
        summaries: dict[str, str] = {}
        per_class: dict[str, list[dict[str, Any]]] = {}
        self._coco_evals = {}
        if not image_ids:
            logger.warning("CocoEvaluator.compute() called without any predictions; all metrics are -1.")
            for iou_type in self.iou_types:
                metrics.update({f"{iou_type}/{name}": -1.0 for name in STAT_NAMES})
                summaries[iou_type] = "no predictions"
                per_class[iou_type] = []
            return metrics, summaries, per_class
        for iou_type in self.iou_types:
            detections = coco_result_dicts(merged, image_ids, iou_type)
            coco_eval, summaries[iou_type] = self._run_cocoeval(iou_type, detections, image_ids)
            self._coco_evals[iou_type] = coco_eval
            metrics.update({f"{iou_type}/{name}": float(v) for name, v in zip(STAT_NAMES, coco_eval.stats)})
            per_class[iou_type] = self._per_class_ap(coco_eval)
        return metrics, summaries, per_class

    def _run_cocoeval(self, iou_type: str, detections: list[dict[str, Any]], image_ids: list[int]) -> tuple[Any, str]:
        """COCOeval of ``detections`` on ``image_ids`` with the chosen backend: ``(evaluated, summary text)``."""
        if self.backend == "pycocotools":
            coco_gt, evaluator_class, options = self.coco_gt, COCOeval, {}
        else:
            import faster_coco_eval

            if self._backend_gt is None:
                with contextlib.redirect_stdout(io.StringIO()):
                    self._backend_gt = faster_coco_eval.COCO(copy.deepcopy(self.coco_gt.dataset))
            coco_gt, evaluator_class = self._backend_gt, faster_coco_eval.COCOeval_faster
            options = {"print_function": print}  # its summary goes to a logger otherwise
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = self._load_results(coco_gt, detections)
            coco_eval = evaluator_class(coco_gt, coco_dt, iouType=iou_type, **options)
            coco_eval.params.imgIds = image_ids
            coco_eval.evaluate()
            coco_eval.accumulate()
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            coco_eval.summarize()
        return coco_eval, buffer.getvalue()

    @staticmethod
    def _load_results(coco_gt: COCO, detections: list[dict[str, Any]]) -> COCO:
        """``coco_gt.loadRes(detections)`` (which writes into them); an empty list gives an empty result set
        (pycocotools' loadRes fails on one)."""
        if detections:
            return coco_gt.loadRes(detections)
        coco_dt = type(coco_gt)()
        coco_dt.dataset = {
            "images": list(coco_gt.dataset.get("images", [])),
            "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
            "annotations": [],
        }
        coco_dt.createIndex()
        return coco_dt

    def _per_class_ap(self, coco_eval: COCOeval) -> list[dict[str, Any]]:
        # precision: [T iou thresholds, R recall points, K categories, A area ranges, M max dets]
        precision = coco_eval.eval["precision"]
        iou_thresholds = coco_eval.params.iouThrs
        rows = []
        for k, category_id in enumerate(coco_eval.params.catIds):
            row = {
                "category_id": int(category_id),
                "name": str(self.coco_gt.cats[category_id].get("name", category_id)),
            }
            for key, t in (("AP", None), ("AP50", 0.5), ("AP75", 0.75)):
                values = (
                    precision[:, :, k, 0, -1] if t is None else precision[np.isclose(iou_thresholds, t), :, k, 0, -1]
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
        if iou_type not in self._coco_evals:
            raise RuntimeError("precision arrays exist only on the rank that evaluated (rank 0) and after predictions.")
        return self._coco_evals[iou_type].eval["precision"]

    def pr_curves(self, iou_type: str = "bbox", iou_threshold: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-class precision/recall curves at one IoU threshold (area all, 100 detections):
        ``{class name: (recall [101], precision [101])}``, undefined points dropped."""
        precision = self.precision(iou_type)
        coco_eval = self._coco_evals[iou_type]
        t = np.flatnonzero(np.isclose(coco_eval.params.iouThrs, iou_threshold))
        if t.size == 0:
            raise ValueError(f"iou_threshold must be one of {coco_eval.params.iouThrs.tolist()}, got {iou_threshold}.")
        recall = coco_eval.params.recThrs
        curves = {}
        for k, category_id in enumerate(coco_eval.params.catIds):
            p = precision[t[0], :, k, 0, -1]
            valid = p > -1
            curves[str(self.coco_gt.cats[category_id].get("name", category_id))] = (recall[valid], p[valid])
        return curves

    def detections_json(self, iou_type: str = "bbox") -> list[dict[str, Any]]:
        """COCO result dicts of one iou type (after :meth:`compute`: of all ranks, de-duplicated),
        ready for ``json.dump`` and ``COCO.loadRes``."""
        self._check_type(iou_type)
        results = self._merged if self._merged is not None else self._results
        return coco_result_dicts(results, sorted(results), iou_type)

    def _check_type(self, iou_type: str) -> None:
        if iou_type not in self.iou_types:
            raise ValueError(f"iou_type {iou_type!r} was not evaluated; this evaluator has {self.iou_types}.")

    @property
    def num_images(self) -> int:
        """Number of distinct images predicted on this rank."""
        return len(self._results)
