"""tools/gpu_check.py: the dry run of every section on the CPU, result lines, budget and torn files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sasa_det.analysis.gpu_check import SECTIONS, format_results, read_results, run_gpu_check
from sasa_det.analysis.gpu_check.sections import run_section
from tests.helpers import REPO, load_tool


def test_dry_run_runs_every_section_and_writes_results_as_json_lines(tmp_path, capsys):
    code = load_tool("gpu_check").main(["--dry-run", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert all("section" in record for record in records)
    statuses = {record["section"]: record["status"] for record in records if "status" in record}
    assert statuses == {section.name: "ok" for section in SECTIONS}
    results = [record for record in records if "status" not in record]
    by_section = {name: [r for r in results if r["section"] == name] for name in statuses}
    assert by_section["environment"][0]["torch"] and "missing_packages" in by_section["environment"][0]
    # correctness: every CPU-capable SASA implementation at both widths, both borders, both dtypes
    checked = {
        (r["impl"], r["dtype"], r["head_width"], r["mask_padding"]) for r in by_section["correctness_sasa"] if "ok" in r
    }
    assert {impl for impl, *_ in checked} >= {"shift", "unfold", "halo", "triton"} and len(checked) >= 4 * 8
    families = {r.get("family") for r in by_section["correctness_sasa"] if r.get("impl") == "triton" and "ok" in r}
    assert {"cuda_core", "tensor_core"} <= families  # both kernel families ran (interpreted) and were checked
    assert all(r["ok"] for r in results if "ok" in r), [r for r in results if r.get("ok") is False]
    assert any(
        r.get("layer") == "augmented_conv" and r["head_widths"] == [13, 6] for r in by_section["correctness_stem_aa"]
    )
    assert {r["name"] for r in by_section["layers"]} >= {"sasa", "attention_stem", "aa", "aa_no_rel_padded"}
    assert all(r["first_step_s"] > 0 for name, rows in by_section.items() if name.startswith("model_") for r in rows)
    train, evaluation = by_section["train_eval"]
    assert train["step"] == "train" and train["steps"] == 2 and "val/bbox/AP" in train["metrics"]
    assert Path(train["config"]) == REPO / "configs" / "coco" / "retinanet_sasa_resnet50.yaml"  # the tool's default
    assert evaluation["step"] == "eval" and evaluation["ok"]
    assert code == 0 and "train_eval" in printed and "correctness_sasa" in printed


def test_sections_past_the_budget_are_marked_skipped(tmp_path):
    records = run_gpu_check(
        tmp_path, dry_run=True, sections=["environment", "layers"], budget_s=10, progress=lambda _: None
    )
    assert [(r["section"], r["status"]) for r in records] == [("environment", "skipped"), ("layers", "skipped")]
    assert "time budget" in format_results(records)


def test_a_torn_last_line_is_left_out(tmp_path):
    path = tmp_path / "gpu_check.jsonl"
    path.write_text(json.dumps({"section": "layers", "name": "sasa"}) + "\n" + '{"section": "lay')
    assert read_results(path) == [{"section": "layers", "name": "sasa"}]


def test_training_without_an_experiment_config_is_skipped_and_says_so(tmp_path):
    run_section("train_eval", tmp_path, dry_run=True, train_config=None)
    (record,) = read_results(tmp_path / "gpu_check.jsonl")
    assert record["section"] == "train_eval" and "no experiment config" in record["skipped"]
    assert not (tmp_path / "train_run").exists()


def test_the_tool_refuses_a_missing_training_config(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_tool("gpu_check").main(["--dry-run", "--out", str(tmp_path), "--train-config", str(tmp_path / "no.yaml")])
    assert "no.yaml: no such file" in capsys.readouterr().err
