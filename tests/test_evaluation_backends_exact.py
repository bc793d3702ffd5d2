"""Every COCOeval backend of the evaluator against pycocotools run directly, on the cases that break evaluators.

Each case (:mod:`tests.coco_hard_cases`) goes through :class:`CocoEvaluator` as a validation pass would feed
it (detector outputs, batches in another order than the image ids, a repeated padding image) and is scored
by the backend under test; the reference is pycocotools on the evaluator's results JSON, nothing of ours
involved. Metrics, the precision and recall arrays and the per-class AP must agree to 1e-12. A case where
hotcoco differs fails here under its name; the IoU type then leaves ``HOTCOCO_EXACT_IOU_TYPES``, and
``auto`` no longer picks hotcoco for it (tested below).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import sys

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sasa_det.evaluation import STAT_NAMES, CocoEvaluator, coco_backends, coco_evaluator
from sasa_det.evaluation.detection_columns import encode_masks
from tests.coco_hard_cases import CATEGORY_IDS, MANY, MANY_DETECTIONS, NO_DETECTIONS, NO_GROUND_TRUTH, hard_case

hotcoco = pytest.importorskip("hotcoco")  # installed wherever it has a wheel (the lock file)

LABEL_TO_CATEGORY = {label: category for label, category in enumerate(CATEGORY_IDS, start=1)}
CATEGORY_TO_LABEL = {category: label for label, category in LABEL_TO_CATEGORY.items()}

#: name -> hard_case arguments; every case also has empty images, images without detections, non-contiguous
#: category and image ids, an image with more than 100 detections and objects of every area range
CASES = {
    "polygons": dict(kinds=("polygon",), crowd_share=0.0),
    "compressed_rle": dict(kinds=("compressed",), crowd_share=0.0),
    "uncompressed_rle": dict(kinds=("uncompressed",), crowd_share=0.0),
    "crowd_regions": dict(crowd_share=0.5),
    "score_ties": dict(score_levels=3),
    "distinct_scores": dict(score_levels=None),
    "mixed": dict(),
}
BACKENDS = ("hotcoco", "faster_coco_eval")


def _coco(ground_truth: dict) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _predictions(ground_truth: dict, bbox: list[dict], segm: list[dict]) -> tuple[list[int], list[dict]]:
    """Per image of the ground truth, its detections as a detector returns them (xyxy boxes, labels 1..K,
    masks [N, 1, H, W] of probabilities)."""
    image_ids, predictions = [], []
    for image in ground_truth["images"]:
        mine = [i for i, d in enumerate(bbox) if d["image_id"] == image["id"]]
        boxes = torch.tensor([bbox[i]["bbox"] for i in mine], dtype=torch.float64).reshape(-1, 4)
        masks = np.stack([mask_utils.decode(segm[i]["segmentation"]) for i in mine]) if mine else None
        predictions.append(
            {
                "boxes": torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1).float(),
                "scores": torch.tensor([bbox[i]["score"] for i in mine], dtype=torch.float32),
                "labels": torch.tensor([CATEGORY_TO_LABEL[bbox[i]["category_id"]] for i in mine], dtype=torch.int64),
                "masks": (
                    torch.from_numpy(masks)[:, None].float() * 0.9
                    if mine
                    else torch.zeros(0, 1, image["height"], image["width"])
                ),
            }
        )
        image_ids.append(image["id"])
    return image_ids, predictions


def _run_evaluator(coco: COCO, image_ids, predictions, backend: str) -> CocoEvaluator:
    evaluator = CocoEvaluator(coco, LABEL_TO_CATEGORY, iou_types=("bbox", "segm"), backend=backend)
    order = list(reversed(range(len(image_ids))))  # batches need not come in image id order
    for start in range(0, len(order), 5):
        chosen = order[start : start + 5]
        evaluator.update([predictions[i] for i in chosen], [image_ids[i] for i in chosen])
    wrong = dict(predictions[order[0]], labels=predictions[order[0]]["labels"] % 4 + 1)
    evaluator.update([wrong], [image_ids[order[0]]])  # a padding repeat: ignored
    evaluator.compute()
    return evaluator


def _reference(ground_truth: dict, detections: list[dict], iou_type: str) -> COCOeval:
    """pycocotools alone on the results JSON."""
    coco = _coco(ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco, coco.loadRes(copy.deepcopy(detections)), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def _per_class_ap(coco_eval: COCOeval) -> list[float]:
    """Each category's AP over IoU 0.50:0.95 (area all, 100 detections), NaN without ground truth."""
    rows = []
    for k in range(len(coco_eval.params.catIds)):
        values = coco_eval.eval["precision"][:, :, k, 0, -1]
        rows.append(float(values[values > -1].mean()) if (values > -1).any() else float("nan"))
    return rows


@pytest.fixture(scope="module")
def evaluated() -> dict:
    """case -> (ground truth, {backend: evaluator}), each case evaluated once by every backend."""
    out = {}
    for name, arguments in CASES.items():
        ground_truth, bbox, segm = hard_case(seed=len(out), **arguments)
        image_ids, predictions = _predictions(ground_truth, bbox, segm)
        coco = _coco(ground_truth)
        out[name] = ground_truth, {b: _run_evaluator(coco, image_ids, predictions, b) for b in BACKENDS}
    return out


def test_the_cases_hold_what_they_are_named_after():
    ground_truth, bbox, _ = hard_case(seed=0, **CASES["mixed"])
    images = [image["id"] for image in ground_truth["images"]]
    annotated = {a["image_id"] for a in ground_truth["annotations"]}
    detected = [d["image_id"] for d in bbox]
    assert images[NO_GROUND_TRUTH] not in annotated and images[NO_GROUND_TRUTH] in detected
    assert images[NO_DETECTIONS] in annotated and images[NO_DETECTIONS] not in detected
    assert detected.count(images[MANY_DETECTIONS]) == MANY > 100
    forms = {type(a["segmentation"]).__name__ + str(a["iscrowd"]) for a in ground_truth["annotations"]}
    assert forms >= {"list0", "dict0", "dict1"}
    assert {type(a["segmentation"].get("counts")) for a in ground_truth["annotations"] if a["iscrowd"]} == {list}
    areas = np.array([a["area"] for a in ground_truth["annotations"]])
    assert (areas < 32**2).any() and ((areas > 32**2) & (areas < 96**2)).any() and (areas > 96**2).any()
    scores = [d["score"] for d in bbox if d["image_id"] == images[MANY_DETECTIONS]]
    assert len(set(scores)) < len(scores)  # ties within an image
    assert sorted(CATEGORY_IDS) != list(range(1, len(CATEGORY_IDS) + 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("case", list(CASES))
def test_backend_equals_pycocotools(evaluated, case, iou_type, backend):
    ground_truth, evaluators = evaluated[case]
    evaluator = evaluators[backend]
    assert evaluator.backends[iou_type] == backend
    reference = _reference(ground_truth, evaluator.detections_json(iou_type), iou_type)
    assert (reference.stats > -1).all()  # every area range has ground truth: every stat is defined
    metrics = [evaluator.metrics[f"{iou_type}/{name}"] for name in STAT_NAMES]
    np.testing.assert_allclose(metrics, reference.stats, rtol=0, atol=1e-12, err_msg=f"{case} {iou_type} stats")
    for key, ours in (("precision", evaluator.precision(iou_type)), ("recall", evaluator.recall(iou_type))):
        assert ours.shape == reference.eval[key].shape
        np.testing.assert_allclose(ours, reference.eval[key], rtol=0, atol=1e-12, err_msg=f"{case} {iou_type} {key}")
    per_class = [row["AP"] for row in evaluator.per_class_ap(iou_type)]
    np.testing.assert_allclose(per_class, _per_class_ap(reference), rtol=0, atol=1e-12, err_msg=f"{case} per-class AP")
    assert [row["category_id"] for row in evaluator.per_class_ap(iou_type)] == list(CATEGORY_IDS)
    reference_curve = reference.eval["precision"][0, :, 1, 0, -1]
    recall, precision = evaluator.pr_curves(iou_type)["class7"]
    np.testing.assert_array_equal(precision, reference_curve[reference_curve > -1])
    assert recall.shape == precision.shape


def test_hotcoco_is_bit_identical_to_pycocotools_here(evaluated):
    """Not only within 1e-12: equal to the last bit on every case (faster-coco-eval differs by ~1e-16)."""
    for case, (ground_truth, evaluators) in evaluated.items():
        for iou_type in ("bbox", "segm"):
            reference = _reference(ground_truth, evaluators["hotcoco"].detections_json(iou_type), iou_type)
            evaluator = evaluators["hotcoco"]
            assert [evaluator.metrics[f"{iou_type}/{n}"] for n in STAT_NAMES] == reference.stats.tolist(), case
            assert np.array_equal(evaluator.precision(iou_type), reference.eval["precision"]), (case, iou_type)
            assert np.array_equal(evaluator.recall(iou_type), reference.eval["recall"]), (case, iou_type)


def test_auto_uses_hotcoco_only_for_the_iou_types_proven_exact(monkeypatch):
    assert coco_backends.HOTCOCO_EXACT_IOU_TYPES == {"bbox", "segm"}
    assert coco_backends.resolve_backend("auto", "bbox") == "hotcoco"
    monkeypatch.setattr(coco_backends, "HOTCOCO_EXACT_IOU_TYPES", frozenset({"bbox"}))
    assert coco_backends.resolve_backend("auto", "segm") == "faster_coco_eval"
    assert coco_backends.resolve_backend("hotcoco", "segm") == "hotcoco"  # named explicitly: the user's choice


def test_hotcoco_encodes_masks_as_pycocotools_does():
    rng = np.random.default_rng(0)
    binary = (rng.uniform(size=(6, 29, 37)) > 0.6).astype(np.uint8)  # [N, H, W]
    binary[0] = 0
    binary[1] = 1
    reference = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    for layout in (binary.transpose(1, 2, 0), np.asfortranarray(binary.transpose(1, 2, 0))):  # C and Fortran order
        ours = encode_masks(layout)
        assert [r["counts"] for r in ours] == [r["counts"] for r in reference]
        assert [list(r["size"]) for r in ours] == [[29, 37]] * 6


def test_without_hotcoco_auto_falls_back_with_one_line(monkeypatch, caplog):
    ground_truth, bbox, segm = hard_case(seed=3)
    image_ids, predictions = _predictions(ground_truth, bbox, segm)
    coco = _coco(ground_truth)
    reference = _run_evaluator(coco, image_ids, predictions, "pycocotools")
    monkeypatch.setitem(sys.modules, "hotcoco", None)  # as on a platform without its wheel
    with caplog.at_level(logging.INFO, logger="sasa_det.evaluation"):
        evaluator = _run_evaluator(coco, image_ids, predictions, "auto")
    assert evaluator.backends == {"bbox": "faster_coco_eval", "segm": "faster_coco_eval"}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and all("hotcoco is not installed" in r.getMessage() for r in warnings)  # one per type
    assert all("\n" not in r.getMessage() for r in warnings)
    assert any("faster_coco_eval (bbox)" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    np.testing.assert_allclose(list(evaluator.metrics.values()), list(reference.metrics.values()), rtol=1e-12)
    assert evaluator.detections_json("segm") == reference.detections_json("segm")  # pycocotools encoded the masks
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)
    assert CocoEvaluator(coco, LABEL_TO_CATEGORY).backends == {"bbox": "pycocotools"}
    with pytest.raises(ImportError, match="eval.backend=hotcoco: hotcoco is not installed.*eval.backend=auto"):
        CocoEvaluator(coco, LABEL_TO_CATEGORY, backend="hotcoco")


def test_an_old_hotcoco_is_passed_over(monkeypatch, caplog):
    import hotcoco

    monkeypatch.setattr(hotcoco, "__version__", "1.2.9")
    with caplog.at_level(logging.WARNING, logger="sasa_det.evaluation"):
        assert coco_backends.resolve_backend("auto", "bbox") == "faster_coco_eval"
    assert "hotcoco 1.2.9 is older than 1.3" in caplog.text


# ---------------------------------------------------------------------- the distributed gather, two ranks faked
class _FakeProcessGroup:
    """``torch.distributed`` as seen from ``rank`` of two, the other rank's gathered state given."""

    def __init__(self, rank: int, other, broadcast=None):
        self.rank, self.other, self.broadcast = rank, other, broadcast

    def all_gather_object(self, out, mine):
        out[self.rank], out[1 - self.rank] = mine, self.other

    def broadcast_object_list(self, payload, src):
        if self.rank != src:
            payload[0] = self.broadcast


@pytest.mark.parametrize("backend", ["hotcoco", "faster_coco_eval", "pycocotools"])
def test_distributed_gather_drops_padding_and_equals_one_process(monkeypatch, backend):
    ground_truth, bbox, segm = hard_case(seed=5)
    image_ids, predictions = _predictions(ground_truth, bbox, segm)
    coco = _coco(ground_truth)
    single = _run_evaluator(coco, image_ids, predictions, backend)
    # DistributedSampler: 12 images on 2 ranks, interleaved, and one more on rank 1 to even them out: image 0
    # again (padding), here with different detections, which must be dropped
    ranks = []
    for rank in range(2):
        evaluator = CocoEvaluator(coco, LABEL_TO_CATEGORY, iou_types=("bbox", "segm"), backend=backend)
        for index in range(rank, len(image_ids), 2):
            evaluator.update([predictions[index]], [image_ids[index]])
        ranks.append(evaluator)
    wrong = dict(predictions[0], labels=predictions[0]["labels"] % 4 + 1)
    ranks[1].update([wrong], [image_ids[0]])
    monkeypatch.setattr(coco_evaluator, "_distributed", lambda: True)
    monkeypatch.setattr(coco_evaluator.dist, "get_world_size", lambda: 2)
    group = _FakeProcessGroup(0, ranks[1]._local_results())
    for name in ("all_gather_object", "broadcast_object_list"):
        monkeypatch.setattr(coco_evaluator.dist, name, getattr(group, name))
    monkeypatch.setattr(coco_evaluator.dist, "get_rank", lambda: 0)
    metrics = ranks[0].compute()
    assert metrics == single.metrics and single.duplicates == 1
    assert ranks[0].detections_json("segm") == single.detections_json("segm")
    np.testing.assert_array_equal(ranks[0].precision("bbox"), single.precision("bbox"))
    # rank 1 receives rank 0's numbers
    rank1_group = _FakeProcessGroup(1, ranks[0]._local_results(), (metrics, ranks[0]._summaries, ranks[0]._per_class))
    for name in ("all_gather_object", "broadcast_object_list"):
        monkeypatch.setattr(coco_evaluator.dist, name, getattr(rank1_group, name))
    monkeypatch.setattr(coco_evaluator.dist, "get_rank", lambda: 1)
    assert ranks[1].compute() == single.metrics
    assert ranks[1].per_class_table() == single.per_class_table()
