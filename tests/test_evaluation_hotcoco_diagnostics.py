"""The project's per-class AP, false positives by kind and confusion matrix against what hotcoco computes.

Where they agree the test says so; where they differ the test holds the smallest case that shows why
(documented in docs/evaluation.md): the two confusion matrices pair detections with ground truth by
different rules, and TIDE sorts some false positives, and the missed objects, differently.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from sasa_det.evaluation import CocoEvaluator, analyze_errors
from tests.coco_hard_cases import MANY_DETECTIONS, hard_case
from tests.test_evaluation_backends_exact import LABEL_TO_CATEGORY, _coco, _predictions

hotcoco = pytest.importorskip("hotcoco")  # installed wherever it has a wheel (the lock file)


def _hotcoco_eval(ground_truth: dict, detections: list[dict]) -> hotcoco.COCOeval:
    coco_gt = hotcoco.COCO(copy.deepcopy(ground_truth))
    coco_eval = hotcoco.COCOeval(coco_gt, coco_gt.load_res(copy.deepcopy(detections)), "bbox")
    coco_eval.evaluate()
    return coco_eval


def _ground_truth(boxes_and_classes, categories=(1, 2)) -> dict:
    return {
        "images": [{"id": 1, "height": 100, "width": 100}],
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": c, "bbox": list(b), "area": b[2] * b[3], "iscrowd": 0}
            for i, (b, c) in enumerate(boxes_and_classes)
        ],
    }


def _detection(box, category, score) -> dict:
    return {"image_id": 1, "category_id": category, "bbox": list(box), "score": score}


def test_per_class_ap_is_hotcoco_own_per_class_ap():
    ground_truth, bbox, segm = hard_case(seed=2)
    image_ids, predictions = _predictions(ground_truth, bbox, segm)
    evaluator = CocoEvaluator(_coco(ground_truth), LABEL_TO_CATEGORY, iou_types=("bbox", "segm"), backend="hotcoco")
    evaluator.update(predictions, image_ids)
    evaluator.compute()
    for iou_type in ("bbox", "segm"):
        theirs = evaluator.coco_eval(iou_type).report()["per_class"]  # AP only, keyed by category name
        ours = {row["name"]: row["AP"] for row in evaluator.per_class_ap(iou_type)}
        assert set(theirs) == set(ours)
        for name, row in theirs.items():
            assert ours[name] == pytest.approx(row["AP"], rel=0, abs=1e-12)


def test_false_positive_kinds_agree_with_tide_on_background_localisation_and_their_total():
    """On every detection (score threshold 0), without crowd regions and at most 100 detections an image."""
    for seed in range(3):
        ground_truth, bbox, _ = hard_case(seed=seed, crowd_share=0.0)
        crowded = ground_truth["images"][MANY_DETECTIONS]["id"]
        bbox = [d for d in bbox if d["image_id"] != crowded]
        tide = _hotcoco_eval(ground_truth, bbox).tide_errors(pos_thr=0.5, bg_thr=0.1)["counts"]
        kinds = {name: int(counts.sum()) for name, counts in analyze_errors(ground_truth, bbox, 0.5, 0.0).kinds.items()}
        assert kinds["background"] == tide["Bkg"] > 0
        assert kinds["localisation"] == tide["Loc"] > 0
        ours = kinds["localisation"] + kinds["confusion"] + kinds["duplicate"]
        assert ours == tide["Loc"] + tide["Cls"] + tide["Both"] + tide["Dupe"]


def test_tide_calls_a_duplicate_over_another_class_a_class_error():
    # two objects of different classes in the same place; both detections say class 1
    ground_truth = _ground_truth([((10, 10, 40, 40), 1), ((10, 10, 40, 40), 2)])
    detections = [_detection((10, 10, 40, 40), 1, 0.9), _detection((11, 10, 40, 40), 1, 0.8)]
    kinds = analyze_errors(ground_truth, detections, 0.5, 0.0).kinds
    assert kinds["duplicate"].tolist() == [1, 0] and kinds["confusion"].sum() == 0  # ours: duplicate first
    tide = _hotcoco_eval(ground_truth, detections).tide_errors()["counts"]
    assert tide["Cls"] == 1 and tide["Dupe"] == 0  # TIDE: a class error before a duplicate


def test_tide_counts_as_missed_only_objects_no_false_positive_explains():
    ground_truth = _ground_truth([((10, 10, 40, 40), 1)])
    detections = [_detection((10, 10, 40, 40), 2, 0.9)]  # found, with the wrong class
    kinds = analyze_errors(ground_truth, detections, 0.5, 0.0).kinds
    assert kinds["confusion"].tolist() == [0, 1] and kinds["missed"].tolist() == [1, 0]
    tide = _hotcoco_eval(ground_truth, detections).tide_errors()["counts"]
    assert tide["Cls"] == 1 and tide["Miss"] == 0


def _competing_images(ground_truth: dict, detections: list[dict]) -> set[int]:
    """Images where a ground truth has two detections at IoU >= 0.5 or a detection two ground truths."""
    from torchvision.ops import box_iou

    from sasa_det.evaluation.error_analysis import _images

    images, _ = _images(ground_truth, detections, 0.0)
    competing = set()
    for info, image in zip(ground_truth["images"], images):
        matches = box_iou(image.gt_boxes, image.det_boxes) >= 0.5
        if (matches.sum(dim=0) > 1).any() or (matches.sum(dim=1) > 1).any():
            competing.add(info["id"])
    return competing


def test_confusion_matrices_agree_when_pairs_are_unambiguous():
    for seed in range(3):
        ground_truth, bbox, _ = hard_case(seed=seed, crowd_share=0.0)
        bbox = [d for d in bbox if d["score"] >= 0.5]
        competing = _competing_images(ground_truth, bbox)
        unambiguous = [d for d in bbox if d["image_id"] not in competing]
        ours = analyze_errors(ground_truth, unambiguous, 0.5, 0.5).matrix
        theirs = np.asarray(_hotcoco_eval(ground_truth, unambiguous).confusion_matrix(iou_thr=0.5)["matrix"])
        assert ours.trace() > 3 and ours[-1].sum() > 3  # true positives and detections of nothing
        np.testing.assert_array_equal(ours, theirs.astype(np.int64))


def test_confusion_matrix_pairs_by_iou_where_hotcoco_pairs_by_score():
    # one object of class 1; a class-1 detection scored higher but overlapping less than a class-2 one
    ground_truth = _ground_truth([((10, 10, 40, 40), 1)])
    detections = [_detection((10, 10, 40, 24), 1, 0.9), _detection((10, 10, 40, 38), 2, 0.8)]  # IoU 0.6, 0.95
    ours = analyze_errors(ground_truth, detections, 0.5, 0.0).matrix
    theirs = np.asarray(_hotcoco_eval(ground_truth, detections).confusion_matrix(iou_thr=0.5)["matrix"])
    # rows ground truth (c1, c2, background), columns prediction
    assert ours.tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 0]]  # the best overlap pairs: a class confusion
    assert theirs.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]  # the best score pairs: a true positive
