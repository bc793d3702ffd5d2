"""CocoEvaluator against pycocotools run directly, edge cases, and distributed de-duplication."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sasa_det.data import CocoDetectionDataset, load_checked_coco, make_shapes_dataset
from sasa_det.evaluation import (
    COCO_BACKENDS,
    STAT_NAMES,
    CocoEvaluator,
    DetectionColumns,
    RankResults,
    merge_rank_results,
    plot_pr_curves,
)

SIZE = 64
try:
    import hotcoco  # noqa: F401

    HAVE_HOTCOCO = True
except ImportError:  # a platform without its wheel: "auto" falls back (tests/test_evaluation_backends_exact.py)
    HAVE_HOTCOCO = False
#: every backend, the explicit "hotcoco" only where it is installed
BACKENDS = [b for b in COCO_BACKENDS if HAVE_HOTCOCO or b != "hotcoco"]
NUM_IMAGES = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> CocoDetectionDataset:
    root = tmp_path_factory.mktemp("shapes")
    paths = make_shapes_dataset(
        root, num_train=1, num_val=NUM_IMAGES, image_size=SIZE, seed=5, category_ids=(1, 5, 9), max_objects=4
    )
    return CocoDetectionDataset(load_checked_coco(paths["val_ann"], paths["val_images"], with_masks=True)[0])


def _ground_truth(dataset):
    return [dataset[i][1] for i in range(len(dataset))]


def _noisy_predictions(dataset, seed=0):
    """Imperfect detections: jittered boxes, shifted masks, random scores, wrong labels, false positives."""
    g = torch.Generator().manual_seed(seed)
    predictions = []
    for target in _ground_truth(dataset):
        n = len(target["labels"])
        boxes = target["boxes"] + torch.randn(n, 4, generator=g) * 2.0
        labels = target["labels"].clone()
        flip = torch.rand(n, generator=g) < 0.2
        labels[flip] = labels[flip] % 3 + 1
        masks = torch.roll(target["masks"].float(), shifts=int(torch.randint(-2, 3, (1,), generator=g)), dims=-1)
        extra = 3
        fp_xy = torch.rand(extra, 2, generator=g) * (SIZE - 20)
        fp_boxes = torch.cat([fp_xy, fp_xy + 5 + torch.rand(extra, 2, generator=g) * 15], dim=1)
        fp_masks = torch.zeros(extra, SIZE, SIZE)
        for i, (x1, y1, x2, y2) in enumerate(fp_boxes.int().tolist()):
            fp_masks[i, y1:y2, x1:x2] = 0.9
        predictions.append(
            {
                "boxes": torch.cat([boxes, fp_boxes]).clamp(0, SIZE),
                "scores": torch.rand(n + extra, generator=g),  # some below the 0.05 threshold
                "labels": torch.cat([labels, torch.randint(1, 4, (extra,), generator=g)]),
                "masks": torch.cat([masks, fp_masks])[:, None] * 0.8,  # probabilities, 0.8 > 0.5 inside
            }
        )
    return predictions


def _pycocotools_directly(ann_file, detections, iou_type, image_ids, tmp_path) -> np.ndarray:
    """The reference: pycocotools on a detections json file, nothing of ours involved."""
    det_file = tmp_path / f"dets_{iou_type}.json"
    det_file.write_text(json.dumps(detections))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
        coco_dt = coco_gt.loadRes(str(det_file))
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def _evaluate(dataset, predictions, image_ids, **kwargs):
    evaluator = CocoEvaluator(dataset.coco, dataset.label_to_category, iou_types=("bbox", "segm"), **kwargs)
    for i in range(0, len(predictions), 3):  # several batches
        evaluator.update(predictions[i : i + 3], image_ids[i : i + 3])
    return evaluator, evaluator.compute()


@pytest.mark.parametrize("backend", BACKENDS)
def test_metrics_equal_pycocotools_on_the_same_detections(dataset, tmp_path, backend):
    predictions = _noisy_predictions(dataset)
    evaluator, metrics = _evaluate(dataset, predictions, dataset.image_ids, backend=backend)
    assert set(metrics) == {f"{t}/{n}" for t in ("bbox", "segm") for n in STAT_NAMES}
    for iou_type in ("bbox", "segm"):
        detections = evaluator.detections_json(iou_type)
        reference = _pycocotools_directly(dataset.ann_file, detections, iou_type, dataset.image_ids, tmp_path)
        # the backends match to the last bits; means over the same arrays may be summed in another order
        assert [metrics[f"{iou_type}/{n}"] for n in STAT_NAMES] == pytest.approx(reference.tolist(), rel=1e-12, abs=0)
        assert 0.05 < metrics[f"{iou_type}/AP"] < 0.95  # a non-trivial case
    assert "Average Precision" in evaluator.summary_text() and "segm" in evaluator.summary_text()


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "pycocotools"])
def test_backends_give_identical_metrics_precision_and_per_class_ap(dataset, backend):
    assert COCO_BACKENDS[0] == "auto"  # the default
    predictions = _noisy_predictions(dataset, seed=3)
    half = dataset.image_ids[1::2]  # a subset of the images, as a limited validation run evaluates
    fast, fast_metrics = _evaluate(dataset, predictions[1::2], half, backend=backend)
    slow, slow_metrics = _evaluate(dataset, predictions[1::2], half, backend="pycocotools")
    if backend != "faster_coco_eval" and HAVE_HOTCOCO:
        assert fast.backends == {"bbox": "hotcoco", "segm": "hotcoco"}
    assert fast_metrics.keys() == slow_metrics.keys()
    assert list(fast_metrics.values()) == pytest.approx(list(slow_metrics.values()), rel=1e-12, abs=0)
    for iou_type in ("bbox", "segm"):
        np.testing.assert_allclose(fast.precision(iou_type), slow.precision(iou_type), rtol=1e-12, atol=0)
        for fast_row, slow_row in zip(fast.per_class_ap(iou_type), slow.per_class_ap(iou_type), strict=True):
            assert (fast_row["category_id"], fast_row["name"]) == (slow_row["category_id"], slow_row["name"])
            for key in ("AP", "AP50", "AP75"):
                assert fast_row[key] == pytest.approx(slow_row[key], rel=1e-12, abs=0, nan_ok=True)
    assert fast.summary_text() == slow.summary_text()  # pycocotools' text, whichever library ran


def test_detections_are_converted_to_coco_results(dataset):
    predictions = _noisy_predictions(dataset)
    evaluator, _ = _evaluate(dataset, predictions, dataset.image_ids)
    bbox, segm = evaluator.detections_json("bbox"), evaluator.detections_json("segm")
    expected_bbox, expected_segm = [], []
    for image_id, p in zip(dataset.image_ids, predictions):
        for box, score, label, mask in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), p["masks"]):
            if score < 0.05:
                continue
            x1, y1, x2, y2 = box
            category = {1: 1, 2: 5, 3: 9}[label]
            expected_bbox.append((image_id, category, [x1, y1, x2 - x1, y2 - y1], score))
            binary = (mask[0] > 0.5).numpy().astype(np.uint8)
            expected_segm.append((image_id, category, binary, score))
    assert len(bbox) == len(expected_bbox) == len(segm) < sum(len(p["scores"]) for p in predictions)
    for result, (image_id, category, xywh, score) in zip(bbox, expected_bbox):
        assert (result["image_id"], result["category_id"]) == (image_id, category)
        assert result["score"] == pytest.approx(score) and result["bbox"] == pytest.approx(xywh, abs=1e-4)
    for result, (image_id, category, binary, _score) in zip(segm, expected_segm):
        assert (result["image_id"], result["category_id"]) == (image_id, category) and "bbox" not in result
        assert isinstance(result["segmentation"]["counts"], str)
        np.testing.assert_array_equal(mask_utils.decode(result["segmentation"]), binary)
    json.dumps(bbox + segm)  # serialisable


def test_ground_truth_as_predictions_gives_perfect_scores(dataset):
    perfect = [
        {
            "boxes": t["boxes"],
            "labels": t["labels"],
            "scores": torch.ones(len(t["labels"])),
            "masks": t["masks"][:, None].float(),
        }
        for t in _ground_truth(dataset)
    ]
    evaluator, metrics = _evaluate(dataset, perfect, dataset.image_ids)
    for iou_type in ("bbox", "segm"):
        assert metrics[f"{iou_type}/AP"] == pytest.approx(1.0)
        assert metrics[f"{iou_type}/AP50"] == pytest.approx(1.0) and metrics[f"{iou_type}/AR100"] == pytest.approx(1.0)
        assert all(r["AP"] == pytest.approx(1.0) for r in evaluator.per_class_ap(iou_type))
    table = evaluator.per_class_table("bbox")
    assert "| circle | 1 | 100.0 |" in table and "| triangle | 9 |" in table
    precision = evaluator.precision("segm")
    assert precision.shape == (10, 101, 3, 4, 3)
    curves = evaluator.pr_curves("bbox")
    assert set(curves) == {"circle", "square", "triangle"}
    recall, prec = curves["square"]
    assert np.allclose(prec, 1.0) and recall[-1] == pytest.approx(1.0)


def test_only_predicted_images_are_evaluated(dataset):
    half = dataset.image_ids[: NUM_IMAGES // 2]
    targets = _ground_truth(dataset)[: NUM_IMAGES // 2]
    perfect = [
        {
            "boxes": t["boxes"],
            "labels": t["labels"],
            "scores": torch.ones(len(t["labels"])),
            "masks": t["masks"][:, None].float(),
        }
        for t in targets
    ]
    _, metrics = _evaluate(dataset, perfect, half)
    assert metrics["bbox/AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_predictions_are_handled(dataset, tmp_path, backend):
    empty = [
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "scores": torch.zeros(0),
            "masks": torch.zeros(0, 1, SIZE, SIZE),
        }
        for _ in dataset.image_ids
    ]
    evaluator, metrics = _evaluate(dataset, empty, dataset.image_ids, backend=backend)
    assert evaluator.detections_json() == []
    assert metrics["bbox/AP"] == 0.0 and metrics["segm/AR100"] == 0.0
    assert metrics["bbox/APl"] == -1.0  # no large objects at 64 px: COCOeval's "undefined"
    # all scores under the threshold is the same as no detections
    low = [dict(p, scores=torch.full((len(p["labels"]),), 0.01)) for p in _noisy_predictions(dataset)]
    _, low_metrics = _evaluate(dataset, low, dataset.image_ids, backend=backend)
    assert low_metrics == metrics
    nothing = CocoEvaluator(dataset.coco, dataset.label_to_category, backend=backend)
    assert all(v == -1.0 for v in nothing.compute().values())


def test_repeated_image_keeps_its_first_predictions(dataset):
    predictions = _noisy_predictions(dataset)
    _, reference = _evaluate(dataset, predictions, dataset.image_ids)
    evaluator = CocoEvaluator(dataset.coco, dataset.label_to_category, iou_types=("bbox", "segm"))
    evaluator.update(predictions, dataset.image_ids)
    garbage = [dict(p, labels=p["labels"] % 3 + 1) for p in predictions[:2]]
    evaluator.update(garbage, dataset.image_ids[:2])  # padding repeats: ignored
    assert evaluator.duplicates == 2 and evaluator.num_images == NUM_IMAGES
    assert evaluator.compute() == reference


def _per_detection_reference(predictions, image_ids, label_to_category, threshold=0.05):
    """The conversion as it was written before it was vectorised: per image, tensors to lists, one dict per
    detection; the order is image by image in ascending id, as ``detections_json`` returns them."""
    bbox, segm = [], []
    for image_id, p in sorted(zip(image_ids, predictions), key=lambda pair: pair[0]):
        keep = p["scores"].float() >= threshold
        scores = p["scores"].float()[keep].tolist()
        boxes = p["boxes"].float()[keep]
        categories = [label_to_category[int(label)] for label in p["labels"][keep].tolist()]
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist() if len(boxes) else []
        binary = (p["masks"][keep][:, 0] > 0.5).to(torch.uint8).numpy()
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []
        for c, b, s, rle in zip(categories, xywh, scores, rles):
            bbox.append({"image_id": image_id, "category_id": c, "bbox": b, "score": s})
            segm.append(
                {
                    "image_id": image_id,
                    "category_id": c,
                    "segmentation": dict(rle, counts=rle["counts"].decode()),
                    "score": s,
                }
            )
    return bbox, segm


def test_batched_conversion_equals_the_per_detection_conversion(dataset):
    predictions = _noisy_predictions(dataset, seed=11)
    predictions[2] = {k: v[:0] for k, v in predictions[2].items()}  # an image without detections
    predictions[3] = dict(predictions[3], boxes=predictions[3]["boxes"].double())  # other dtypes are cast
    order = list(reversed(range(NUM_IMAGES)))  # batches need not come in id order
    ids = [dataset.image_ids[i] for i in order]
    evaluator, _ = _evaluate(dataset, [predictions[i] for i in order], ids)
    bbox, segm = _per_detection_reference([predictions[i] for i in order], ids, dataset.label_to_category)
    assert len(bbox) > 20
    assert evaluator.detections_json("bbox") == bbox  # exactly: same floats, ids, order
    assert evaluator.detections_json("segm") == segm
    fresh = CocoEvaluator(dataset.coco, dataset.label_to_category)
    bad = dict(
        predictions[1],
        labels=torch.full_like(predictions[1]["labels"], 7),
        scores=torch.ones(len(predictions[1]["labels"])),
    )
    with pytest.raises(ValueError, match=f"image id {dataset.image_ids[1]} has label 7"):
        fresh.update([predictions[0], bad], dataset.image_ids[:2])


def _columns(image_ids, scores):
    n = len(scores)
    return DetectionColumns(
        np.asarray(image_ids, dtype=np.int64),
        np.ones(n, dtype=np.int64),
        np.tile(np.float32([1, 2, 3, 4]), (n, 1)),
        np.asarray(scores, dtype=np.float32),
        [{"size": [4, 4], "counts": f"{s}".encode()} for s in scores],
    )


def test_merge_rank_results_drops_padded_duplicates():
    # rank 0 predicted images 1, 3, 5 (5 without detections); rank 1 images 2, 4 and, as padding, 1 again
    rank0 = RankResults([1, 3, 5], _columns([1, 1, 3], [0.9, 0.8, 0.7]), 0)
    rank1 = RankResults([2, 4, 1], _columns([2, 1, 4, 1], [0.6, 0.1, 0.5, 0.2]), 2)
    image_ids, merged, duplicates = merge_rank_results([rank0, rank1], with_masks=True)
    assert image_ids == [1, 3, 5, 2, 4] and duplicates == 3  # 1 here, 2 dropped by rank 1 itself
    assert merged.image_ids.tolist() == [1, 1, 3, 2, 4]  # the padding's detections of image 1 are gone
    assert merged.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    assert [m["counts"] for m in merged.masks] == [b"0.9", b"0.8", b"0.7", b"0.6", b"0.5"]


def test_reset_forgets_everything(dataset):
    evaluator, _ = _evaluate(dataset, _noisy_predictions(dataset), dataset.image_ids)
    evaluator.reset()
    assert evaluator.num_images == 0 and evaluator.detections_json() == []
    with pytest.raises(RuntimeError, match="compute"):
        evaluator.per_class_table()


def test_bad_input_is_rejected(dataset):
    with pytest.raises(ValueError, match="iou_types"):
        CocoEvaluator(dataset.coco, dataset.label_to_category, iou_types=("keypoints",))
    with pytest.raises(ValueError, match="category ids \\[4\\]"):
        CocoEvaluator(dataset.coco, {1: 4})
    with pytest.raises(ValueError, match="backend must be one of"):
        CocoEvaluator(dataset.coco, dataset.label_to_category, backend="detectron2")
    evaluator = CocoEvaluator(dataset.coco, dataset.label_to_category, iou_types=("bbox", "segm"))
    good = _noisy_predictions(dataset)[0]
    with pytest.raises(ValueError, match="image id 999"):
        evaluator.update([good], [999])
    with pytest.raises(ValueError, match="label 7"):
        evaluator.update([dict(good, labels=torch.full_like(good["labels"], 7))], [1])
    with pytest.raises(ValueError, match="original image size"):
        evaluator.update([dict(good, masks=good["masks"][..., :10])], [1])
    with pytest.raises(ValueError, match="'masks'"):
        evaluator.update([{k: v for k, v in good.items() if k != "masks"}], [1])
    with pytest.raises(ValueError, match="one id per image"):
        evaluator.update([good], [1, 2])


def test_plot_pr_curves_needs_matplotlib(tmp_path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="matplotlib"):
            plot_pr_curves({"a": (np.linspace(0, 1, 5), np.ones(5))}, tmp_path / "pr.png")
    else:
        assert plot_pr_curves({"a": (np.linspace(0, 1, 5), np.ones(5))}, tmp_path / "pr.png").is_file()


# ---------------------------------------------------------------------- two processes, gloo
def _distributed_worker(rank, world_size, init_file, ann_file, image_dir, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        dataset = CocoDetectionDataset(load_checked_coco(ann_file, image_dir, with_masks=True)[0])
        predictions = _noisy_predictions(dataset)
        # DistributedSampler layout: 8 images + padding to 10 would repeat images; here 7 images on
        # 2 ranks, index 0 padded onto rank 1 (with different, wrong detections that must be dropped).
        indices = list(range(7)) + [0]
        mine = indices[rank::world_size]
        evaluator = CocoEvaluator(dataset.coco, dataset.label_to_category, iou_types=("bbox", "segm"))
        for index in mine:
            prediction = predictions[index]
            if rank == 1 and index == 0:
                prediction = dict(prediction, labels=prediction["labels"] % 3 + 1)
            evaluator.update([prediction], [dataset.image_ids[index]])
        metrics = evaluator.compute()
        Path(out_dir, f"rank{rank}.json").write_text(
            json.dumps(
                {"metrics": metrics, "table": evaluator.per_class_table(), "n": len(evaluator.detections_json())}
            )
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_gathers_deduplicates_and_broadcasts(dataset, tmp_path):
    mp.spawn(
        _distributed_worker,
        args=(2, str(tmp_path / "init"), str(dataset.ann_file), str(dataset.image_dir), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    predictions = _noisy_predictions(dataset)[:7]
    evaluator, reference = _evaluate(dataset, predictions, dataset.image_ids[:7])
    for result in ranks:
        assert result["metrics"] == pytest.approx(reference)
        assert result["table"] == evaluator.per_class_table()
        assert result["n"] == len(evaluator.detections_json())
    assert not math.isnan(reference["bbox/AP"])
