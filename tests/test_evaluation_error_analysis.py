"""Error analysis: the confusion matrix and false positives by kind of a constructed case counted by hand, the
files it writes, bad input named, and the two ways in (tools/eval.py --errors, tools/analyze.py --predictions)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from sasa_det.evaluation import analyze_errors, write_error_analysis
from sasa_det.evaluation.error_analysis import analyze_error_files
from tests.helpers import load_tool

CAT, DOG = 1, 2


def _case():
    """Three images, classes cat and dog (boxes COCO [x, y, w, h]).

    image 1: gt cat A [0,0,10,10], gt dog B [20,20,10,10]
        cat on A (0.9): true positive              -> matrix [cat, cat]
        cat on A (0.8): duplicate                  -> matrix [bg, cat] (A is paired with the first)
        dog at [23,23,10,10] (0.7): IoU 49/151 = 0.32 with B: localisation -> [bg, dog]; B missed -> [dog, bg]
    image 2: gt dog C [0,0,20,20]
        cat on C (0.7): confusion                  -> matrix [dog, cat]
        dog at [50,50,10,10] (0.6): background     -> matrix [bg, dog]
        cat on C (0.1): below the score threshold, ignored
    image 3: gt cat D [0,0,10,10], a crowd dog (ignored), no detection: D missed -> [cat, bg]
    """
    ground_truth = {
        "images": [{"id": i, "width": 64, "height": 64, "file_name": f"{i}.png"} for i in (1, 2, 3)],
        "categories": [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": CAT, "bbox": [0, 0, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": DOG, "bbox": [20, 20, 10, 10], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": DOG, "bbox": [0, 0, 20, 20], "iscrowd": 0},
            {"id": 4, "image_id": 3, "category_id": CAT, "bbox": [0, 0, 10, 10], "iscrowd": 0},
            {"id": 5, "image_id": 3, "category_id": DOG, "bbox": [30, 30, 20, 20], "iscrowd": 1},
        ],
    }
    detections = [
        {"image_id": 1, "category_id": CAT, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": CAT, "bbox": [0, 0, 10, 10], "score": 0.8},
        {"image_id": 1, "category_id": DOG, "bbox": [23, 23, 10, 10], "score": 0.7},
        {"image_id": 2, "category_id": CAT, "bbox": [0, 0, 20, 20], "score": 0.7},
        {"image_id": 2, "category_id": DOG, "bbox": [50, 50, 10, 10], "score": 0.6},
        {"image_id": 2, "category_id": CAT, "bbox": [0, 0, 20, 20], "score": 0.1},
    ]
    return ground_truth, detections


# rows ground truth (cat, dog, background), columns prediction (cat, dog, background)
EXPECTED_MATRIX = np.array([[1, 0, 1], [1, 0, 1], [1, 2, 0]])
EXPECTED_KINDS = {
    "detections": [3, 2],
    "true_positives": [1, 0],
    "localisation": [0, 1],
    "confusion": [1, 0],
    "background": [0, 1],
    "duplicate": [1, 0],
    "missed": [1, 2],
}


def test_constructed_case_gives_the_hand_counted_matrix_and_kinds():
    analysis = analyze_errors(*_case(), iou_threshold=0.5, score_threshold=0.3)
    assert analysis.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(analysis.matrix, EXPECTED_MATRIX)
    assert {k: v.tolist() for k, v in analysis.kinds.items()} == EXPECTED_KINDS


def test_thresholds_move_detections_between_kinds():
    ground_truth, detections = _case()
    # at IoU 0.3 the dog at 0.32 IoU becomes a true positive of B
    loose = analyze_errors(ground_truth, detections, iou_threshold=0.3, score_threshold=0.3)
    assert loose.kinds["true_positives"].tolist() == [1, 1] and loose.kinds["localisation"].tolist() == [0, 0]
    assert loose.matrix[1, 1] == 1
    # with the 0.1 detection included it is a second cat on C: paired with nothing, a confusion of its own
    low = analyze_errors(ground_truth, detections, iou_threshold=0.5, score_threshold=0.05)
    assert low.kinds["confusion"].tolist() == [2, 0] and low.matrix[2, 0] == 2


def test_files_written_and_read_back(tmp_path):
    ground_truth, detections = _case()
    written = write_error_analysis(analyze_errors(ground_truth, detections), tmp_path)
    assert {p.name for p in written} == {"confusion_matrix.csv", "false_positives.md", "confusion_matrix.png"}
    rows = list(csv.reader((tmp_path / "confusion_matrix.csv").open()))
    assert rows[0][1:] == ["cat", "dog", "background"]
    np.testing.assert_array_equal(np.array([[int(v) for v in row[1:]] for row in rows[1:]]), EXPECTED_MATRIX)
    table = (tmp_path / "false_positives.md").read_text()
    assert "| cat | 3 | 1 | 0 | 1 | 0 | 1 | 1 |" in table and "| all | 5 | 1 | 1 | 1 | 1 | 1 | 3 |" in table


def test_analyze_tool_over_saved_files_and_bad_input(tmp_path, capsys):
    ground_truth, detections = _case()
    (tmp_path / "val.json").write_text(json.dumps(ground_truth))
    (tmp_path / "dets.json").write_text(json.dumps(detections))
    analyze = load_tool("analyze")
    argv = ["--predictions", str(tmp_path / "dets.json"), "--ann", str(tmp_path / "val.json"), "--out"]
    analysis = analyze.main([*argv, str(tmp_path / "errors")])
    np.testing.assert_array_equal(analysis.matrix, EXPECTED_MATRIX)
    assert "| dog | 2 | 0 | 1 | 0 | 1 | 0 | 2 |" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps([{**detections[0], "image_id": 99}]))
    argv[1] = str(tmp_path / "bad.json")
    with pytest.raises(SystemExit, match=r"bad\.json.*detection 0 has image_id 99"):
        analyze.main([*argv, str(tmp_path / "errors2")])
    with pytest.raises(FileNotFoundError, match="detections_bbox.json written by tools/eval.py"):
        analyze_error_files(tmp_path / "val.json", tmp_path / "missing.json")


def test_eval_errors_flag_writes_a_matrix_covering_every_ground_truth(tiny_detection_run, tmp_path):
    out = tmp_path / "eval"
    argv = [tiny_detection_run["last_checkpoint"], "--errors", "eval.error_score_threshold=0.0", "--out", str(out)]
    result = load_tool("eval").main(argv)
    rows = list(csv.reader((Path(result["output_dir"]) / "errors" / "confusion_matrix.csv").open()))
    matrix = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
    ground_truth = json.loads(Path(_val_ann(tiny_detection_run["config_path"])).read_text())
    annotations = [a for a in ground_truth["annotations"] if not a.get("iscrowd", 0)]
    assert matrix[:-1].sum() == len(annotations)  # every ground truth is paired or missed exactly once
    detections = json.loads((out / "detections_bbox.json").read_text())
    assert matrix[:, :-1].sum() == len(detections)  # every detection (score >= 0) is paired or unpaired once


def _val_ann(config_path: str) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.load(config_path).data.val_ann
