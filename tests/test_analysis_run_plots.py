"""evaluation.json after training, and tools/analyze.py's plots of a run directory."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sasa_det.analysis.run_plots import read_metrics_csv
from tests.helpers import load_tool

analyze = load_tool("analyze")

_SPARSE_CSV = """epoch,lr-SGD,step,train/loss,val/mAP,val/bbox/APl
,0.01,0,,,
0,,0,2.5,,
,0.02,1,,,
0,,1,2.0,,
0,,1,,0.25,-1.0
"""


def _evaluation_record():
    rows = [
        {"category_id": 1, "name": "cat", "AP": 0.5, "AP50": 0.75, "AP75": 0.5},
        {"category_id": 2, "name": "dog", "AP": None, "AP50": None, "AP75": None},
    ]
    curve = {"recall": [0.0, 0.5, 1.0], "precision": [1.0, 0.8, 0.2]}
    return {"pr_iou_threshold": 0.5, "iou_types": {"bbox": {"per_class": rows, "pr_curves": {"cat": curve}}}}


@pytest.fixture
def handmade_run(tmp_path):
    (tmp_path / "logs" / "version_0").mkdir(parents=True)
    (tmp_path / "logs" / "version_0" / "metrics.csv").write_text(_SPARSE_CSV)
    (tmp_path / "evaluation.json").write_text(json.dumps(_evaluation_record()))
    return tmp_path


def _assert_drawn(path):
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 10, f"{path} is blank"


def test_evaluation_json_holds_per_class_rows_and_pr_curves(tiny_detection_run):
    record = json.loads((Path(tiny_detection_run["output_dir"]) / "evaluation.json").read_text())
    assert record["pr_iou_threshold"] == 0.5
    bbox = record["iou_types"]["bbox"]
    assert [row["name"] for row in bbox["per_class"]] == ["circle", "square", "triangle"]
    for row in bbox["per_class"]:
        assert {"category_id", "AP", "AP50", "AP75"} <= set(row)
    assert set(bbox["pr_curves"]) == {"circle", "square", "triangle"}
    for curve in bbox["pr_curves"].values():
        assert len(curve["recall"]) == len(curve["precision"]) > 0
        assert all(0 <= p <= 1 for p in curve["precision"]) and curve["recall"] == sorted(curve["recall"])


def test_read_metrics_csv_keeps_each_columns_own_rows(handmade_run):
    series = read_metrics_csv(handmade_run / "logs" / "version_0" / "metrics.csv")
    assert series == {
        "lr-SGD": [(0, 0.01), (1, 0.02)],
        "train/loss": [(0, 2.5), (1, 2.0)],
        "val/mAP": [(1, 0.25)],
        "val/bbox/APl": [(1, -1.0)],
    }


def test_analyze_tool_draws_every_plot_of_a_trained_run(tiny_detection_run, tmp_path, capsys):
    analyze.main([tiny_detection_run["output_dir"], "--out", str(tmp_path / "plots")])
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["per_class_ap.png", "pr_curves_bbox.png", "training_curves.png"]
    for name in names:
        _assert_drawn(tmp_path / "plots" / name)
    assert "3 plot(s) written" in capsys.readouterr().out


def test_analyze_defaults_to_the_run_analysis_folder(handmade_run):
    analyze.main([str(handmade_run)])
    assert sorted(p.name for p in (handmade_run / "analysis").iterdir()) == [
        "per_class_ap.png",
        "pr_curves_bbox.png",
        "training_curves.png",
    ]


def test_analyze_without_matplotlib_says_how_to_install_it_and_exits_2(handmade_run, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(SystemExit) as stop:
        analyze.main([str(handmade_run)])
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert "uv sync --extra plots" in message and "pip install matplotlib" in message
    assert not (handmade_run / "analysis").exists()


@pytest.mark.parametrize(
    "missing, writer", [("logs/version_0/metrics.csv", "CSV logger"), ("evaluation.json", "tools/eval.py")]
)
def test_analyze_names_a_missing_input_and_what_writes_it(handmade_run, missing, writer):
    (handmade_run / missing).unlink()
    with pytest.raises(SystemExit) as stop:
        analyze.main([str(handmade_run)])
    assert missing.split("/")[-1] in str(stop.value.code) and writer in str(stop.value.code)
