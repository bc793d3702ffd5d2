"""The detector zoo (``tools/benchmark.py zoo``): the table's figures and a quick end-to-end run of two rows."""

from __future__ import annotations

import json
import math

import pytest

from sasa_det.analysis.zoo_benchmark import format_mean_spread, format_zoo_table, mean_spread
from sasa_det.analysis.zoo_rows import ZOO_ROWS
from tests.helpers import REPO, load_tool


def test_mean_spread_against_hand_computed_values():
    # mean of 0.40, 0.42, 0.47 is 0.43; deviations -0.03, -0.01, 0.04: sum of squares 0.0026 over n-1 = 2
    mean, spread = mean_spread([0.40, 0.42, 0.47])
    assert mean == pytest.approx(0.43)
    assert spread == pytest.approx(math.sqrt(0.0026 / 2))  # 0.03606
    assert format_mean_spread([0.40, 0.42, 0.47]) == "0.430 ± 0.036"
    assert format_mean_spread([0.5, 0.7]) == "0.600 ± 0.141"  # |a - b| / sqrt(2)
    assert format_mean_spread([0.41234]) == "0.412"
    assert format_mean_spread([]) == "-"


def test_table_formatting():
    results = {
        "rows": [
            {
                "row": "conv",
                "about": "a conv RetinaNet",
                "params": 1_330_000,
                "flops": 412_000_000,
                "runs": {
                    0: {"bbox": 0.5, "segm": None, "step_ms": 100.0},
                    1: {"bbox": 0.7, "segm": None, "step_ms": 120.0},
                },
            },
            {
                "row": "mask_rcnn",
                "about": "a Mask R-CNN",
                "params": 7_460_000,
                "flops": None,
                "runs": {0: {"bbox": 0.3, "segm": 0.25, "step_ms": 900.0}, 1: {"error": "exit status 1"}},
            },
        ]
    }
    lines = format_zoo_table(results).splitlines()
    assert lines[0] == "| row | model | params (M) | FLOPs (G) | CPU ms/step | bbox mAP | mask mAP | seeds |"
    assert lines[2] == "| conv | a conv RetinaNet | 1.33 | 0.41 | 110 | 0.600 ± 0.141 | - | 2 |"
    assert lines[3] == "| mask_rcnn | a Mask R-CNN | 7.46 | - | 900 | 0.300 | 0.250 | 1/2 |"


def test_rows_are_overrides_of_the_base_config():
    from sasa_det.engine.experiment import load_config

    assert {"conv", "sasa_convstem", "sasa_full", "demo_mix", "aa", "all_attention", "faster_rcnn", "mask_rcnn"} <= set(
        ZOO_ROWS
    )
    for name, row in ZOO_ROWS.items():
        cfg = load_config("configs/zoo/shapes_hard.yaml", list(row["overrides"]))
        assert cfg.model.backbone.name == "resnet26" and cfg.model.fpn_channels == 64, name
    assert load_config("configs/zoo/shapes_hard.yaml", ZOO_ROWS["all_attention"]["overrides"]).model.head == "attention"


def test_quick_zoo_of_two_rows_and_reuse(tmp_path, capsys):
    benchmark = load_tool("benchmark")
    out = tmp_path / "zoo"
    argv = ["zoo", "--quick", "--rows", "conv", "all_attention", "--output-dir", str(out)]
    assert benchmark.main([*argv, "--output", str(tmp_path / "table")]) == 0
    captured = capsys.readouterr()
    assert "[1/2] conv seed 0: mAP" in captured.err and "[2/2] all_attention seed 0: mAP" in captured.err
    table = (tmp_path / "table.md").read_text().strip()
    assert captured.out.rstrip().endswith(table)  # printed last, after the runs' own output
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == ["| conv", "| all_attention"]
    results = json.loads((tmp_path / "table.json").read_text())
    for row in results["rows"]:
        (run,) = row["runs"].values()
        assert row["params"] > 0 and row["flops"] > 0
        assert math.isfinite(run["bbox"]) and 0 <= run["bbox"] <= 1 and run["step_ms"] > 0, row["row"]
        assert (out / row["row"] / "seed0" / "metrics.json").is_file()
    # a finished run directory is reused, not retrained
    assert benchmark.main([*argv, "--rows", "conv"]) == 0
    err = capsys.readouterr().err
    assert "[1/1] conv seed 0: mAP" in err and "reused" in err


def test_an_interrupted_run_is_continued_from_its_checkpoint_by_the_training_command(tmp_path):
    """A run the table left with a checkpoint but no final metrics (stopped while it trained) is continued with
    ``tools/train.py ... --resume``, not refused as a used output_dir; it then has final metrics."""
    import sys

    from sasa_det.analysis.zoo_benchmark import QUICK_OVERRIDES, ZooSettings, run_zoo

    out = tmp_path / "zoo"
    settings = ZooSettings(
        config=REPO / "configs" / "zoo" / "shapes_hard.yaml",
        output_root=out,
        train_command=None,  # the first run in this process (quicker); the continued one by the training command
        rows=["conv"],
        seeds=1,
        steps=2,
        threads=1,
        extra_overrides=[*QUICK_OVERRIDES, f"data.shapes.root={tmp_path / 'shapes'}"],
    )
    lines: list[str] = []
    run_zoo(settings, progress=lines.append)
    run_dir = out / "conv" / "seed0"
    assert lines == [lines[0]] and "[1/1] conv seed 0: mAP" in lines[0] and "resumed" not in lines[0]
    (run_dir / "metrics.json").unlink()  # as if stopped after its last checkpoint, before the final metrics
    settings.steps = 3
    settings.train_command = [sys.executable, str(REPO / "tools" / "train.py")]
    lines.clear()
    results = run_zoo(settings, progress=lines.append)
    assert "[1/1] conv seed 0: mAP" in lines[0] and "resumed, in" in lines[0], lines
    assert "resuming from" in (out / "conv" / "seed0.log").read_text()
    (run,) = results["rows"][0]["runs"].values()
    assert run["resumed"] and 0 <= run["bbox"] <= 1 and (run_dir / "metrics.json").is_file()
