"""The benchmark library on tiny settings: rows, baselines and ratios are what the tables report."""

from __future__ import annotations

import pytest
import torch

from sasa_det.analysis.benchmark_report import machine_description
from sasa_det.analysis.eval_benchmark import (
    ANCHORS,
    benchmark_eval,
    format_eval_report,
    mask_memory,
    prediction_masks,
    synthetic_coco,
)
from sasa_det.analysis.layer_benchmark import benchmark_layers, format_layer_progress, format_layer_table
from sasa_det.analysis.model_benchmark import benchmark_models, format_model_table


def test_eval_benchmark_backends_agree_on_synthetic_detections():
    coco, predictions = synthetic_coco(30, seed=1, with_masks=True)
    assert len(coco.imgs) == len(predictions) == 30 and len(coco.anns) >= 30
    forms = {(type(a["segmentation"]).__name__, a["iscrowd"]) for a in coco.anns.values()}
    assert forms == {("list", 0), ("dict", 0), ("dict", 1)}  # polygons, RLE, crowd regions
    masks = prediction_masks(predictions[0], (480, 640))
    assert masks.shape == (len(predictions[0]["scores"]), 1, 480, 640) and set(masks.unique().tolist()) == {
        0.0,
        torch.tensor(0.8).item(),
    }
    results = benchmark_eval(30, segm_images=12, memory_images=0)
    for iou_type in ("bbox", "segm"):
        rows = results[iou_type]
        assert [(row["kind"], row["name"]) for row in rows] == [("anchor", name) for name in ANCHORS] + [
            ("evaluator", name) for name in ("auto", "faster_coco_eval", "pycocotools")
        ]
        assert rows[0]["time_ratio"] == 1.0 and rows[-1]["evaluator_ratio"] == 1.0
        assert (
            rows[3]["backend"] == "hotcoco"
            and rows[3]["seconds"] == rows[3]["update_seconds"] + rows[3]["compute_seconds"]
        )
        assert all(row["max_stat_difference"] <= 1e-12 for row in rows)
        assert 0.05 < rows[0]["stats"][0] < 0.95  # jitter and false positives: not trivial
    report = format_eval_report(results)
    assert "| sasa_det evaluator, default: auto → hotcoco, hotcoco backend (update" in report
    assert "| 12 images," in report and "segm |" in report and "target ≤ 0.05×" in report


def test_eval_benchmark_memory_of_masks():
    memory = mask_memory(4)  # what benchmark_eval runs in a child process
    assert memory["masks_total"] >= memory["detections"] > 0 and memory["backend"] == "hotcoco"
    assert 0 < memory["kept_mib"] < memory["binary_split_mib"] / 10  # RLEs, not binary masks, are kept
    assert "Mask R-CNN-sized masks" in format_eval_report({"bbox": [], "segm": [], "memory": memory})


def test_layer_benchmark_rows_and_ratios():
    shape = dict(channels=16, heads=2, kernel_size=3, height=8, width=12)
    rows = benchmark_layers(**shape, repeats=1, warmup=0, cases=["sasa", "aa_no_rel"], isolate=False)
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"conv3x3", "sasa", "aa_no_rel"}  # the baseline is added
    assert by_name["conv3x3"]["time_ratio"] == 1.0
    assert by_name["sasa"]["time_ms"] > 0 and by_name["sasa"]["input"] == [1, 16, 8, 12]
    assert "sasa" in format_layer_table(rows, "cpu")


def test_layer_benchmark_reports_each_case_as_it_finishes(monkeypatch):
    from sasa_det.analysis import layer_benchmark
    from sasa_det.analysis.measure import IsolatedProcessDied

    seen = []
    shape = dict(channels=16, heads=2, kernel_size=3, height=8, width=12, repeats=1, warmup=0, isolate=False)
    rows = benchmark_layers(**shape, cases=["sasa", "sasa_cuda_core"], progress=lambda *a: seen.append(a))
    assert [(row["name"], done, total) for row, done, total in seen] == [
        ("conv3x3", 1, 3),
        ("sasa", 2, 3),
        ("sasa_cuda_core", 3, 3),
    ]
    assert "ms fwd+bwd" in format_layer_progress(rows[1], 2, 3, 1.0) and "skipped" in format_layer_progress(
        rows[2], 3, 3, 1.0
    )

    # a case whose process dies (the out-of-memory killer) is reported as such, and the others still run
    def dies(fn, name, settings):
        if name == "sasa":
            raise IsolatedProcessDied("the process running _run_case died without a result")
        return fn(name, settings)

    monkeypatch.setattr(layer_benchmark, "run_isolated", dies)
    rows = benchmark_layers(**{**shape, "isolate": True}, cases=["sasa"])
    assert "died without a result" in rows[1]["skipped"] and rows[0]["time_ms"] > 0


def test_a_fresh_process_that_dies_is_an_error_not_a_wait():
    import os

    from sasa_det.analysis.measure import IsolatedProcessDied, run_isolated

    assert run_isolated(abs, -3) == 3
    with pytest.raises(IsolatedProcessDied, match="died without a result"):
        run_isolated(os._exit, 9)  # as the out-of-memory killer ends a process: no result, no exception


def test_model_benchmark_against_torchvision():
    rows = benchmark_models(height=64, width=64, repeats=1, warmup=0, cases=["retinanet_resnet50"], isolate=False)
    assert [row["name"] for row in rows] == ["torchvision_retinanet_resnet50", "retinanet_resnet50"]
    assert rows[0]["time_ratio"] == 1.0
    # the conv RetinaNet is torchvision's model: the same parameters (see the detector tests)
    assert rows[1]["parameters_m"] == pytest.approx(rows[0]["parameters_m"])
    assert all(row["train_images_per_s"] > 0 and row["infer_images_per_s"] > 0 for row in rows)
    assert "| retinanet_resnet50 |" in format_model_table(rows)


def test_machine_description_names_versions():
    text = machine_description("cpu")
    assert "torch " in text and "faster-coco-eval" in text and "CPU:" in text


def test_aa_rows_are_sized_by_the_path_that_will_run(monkeypatch):
    from sasa_det.analysis import layer_benchmark

    settings = {"device": "cuda", "dtype": "bfloat16", "height": 128, "width": 128, "batch": 1, "heads": 8}
    dense = 4 * 8 * (128 * 128) ** 2 * 2  # logits, weights and their gradients, bfloat16
    monkeypatch.setattr(layer_benchmark, "flex_attention_available", lambda: True)
    monkeypatch.setattr(layer_benchmark, "flex_attention_report", lambda: [])
    assert layer_benchmark._attention_bytes("aa", settings) == 0  # FlexAttention forms no (HW)² tensor
    assert layer_benchmark._attention_bytes("aa_sdpa", settings) == dense
    assert layer_benchmark._attention_bytes("aa_no_rel_padded", settings) == 0  # SDPA's fused kernels
    failed = [{"device": "cuda:0", "usable": False}]
    monkeypatch.setattr(layer_benchmark, "flex_attention_report", lambda: failed)
    assert layer_benchmark._attention_bytes("aa", settings) == dense  # the probe failed: the dense mask runs
    assert layer_benchmark._attention_bytes("aa_pooled", settings) == 4 * 8 * (64 * 64) ** 2 * 2
    assert layer_benchmark._attention_bytes("aa", {**settings, "device": "cpu"}) == dense  # no FlexAttention off CUDA
    # CPU SDPA runs unequal head widths on its math path (measured: 159 MiB at 32×40, the padded case 17 MiB)
    assert layer_benchmark._attention_bytes("aa_no_rel", {**settings, "device": "cpu"}) == dense
    assert layer_benchmark._attention_bytes("aa_no_rel", settings) == 0
    assert layer_benchmark._attention_bytes("aa_no_rel_padded", {**settings, "device": "cpu"}) == 0
    rows = layer_benchmark.benchmark_layers(
        channels=16,
        heads=2,
        kernel_size=3,
        height=64,
        width=64,
        repeats=1,
        warmup=0,
        cases=["aa"],
        isolate=False,
        max_attention_bytes=2**20,
    )
    assert "GiB of attention tensors" in {row["name"]: row for row in rows}["aa"]["skipped"]
