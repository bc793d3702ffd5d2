"""A user's mistake ends a tool with one ``error: ...`` line naming the file or key and what to give instead,
never a traceback; every tool reports through the same path (``sasa_det.cli.run_tool``)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import DEMO_CONFIG, tiny_shapes_overrides

REPO = Path(__file__).resolve().parents[1]


def _tool(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


def test_every_tool_reports_through_the_one_error_path():
    for tool in sorted((REPO / "tools").glob("*.py")):
        tree = ast.parse(tool.read_text(encoding="utf-8"))
        guard = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
        assert guard and ast.unparse(guard[0].body[0]) == "run_tool(main)", (
            f"{tool.name} does not end in run_tool(main)"
        )


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_an_exported_model_as_init_from_is_named_before_anything_is_written(tmp_path, kind):
    if kind == "torchscript":
        exported = tmp_path / "model.pt"
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), exported)
        named = "a TorchScript model"
    else:  # an ONNX ModelProto starts with its ir_version field and names its producer
        exported = tmp_path / "model.onnx"
        exported.write_bytes(b"\x08\x08\x12\x07pytorch\x1a\x052.5.0:\x00" + b"\x00" * 64)
        named = "an ONNX model"
    out = tmp_path / "run"
    overrides = tiny_shapes_overrides(tmp_path / "shapes", out)
    done = _tool("tools/train.py", str(DEMO_CONFIG), *overrides, f"model.init_from={exported}")
    line = _one_error_line(done)
    assert f"model.init_from weights {exported}: is {named}" in line and "give the .ckpt it was exported from" in line
    assert not out.exists()


def test_an_unknown_zoo_row_as_init_from_is_one_line_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    overrides = tiny_shapes_overrides(tmp_path / "shapes", out)
    done = _tool("tools/train.py", str(DEMO_CONFIG), *overrides, "model.init_from=zoo:no_such_row")
    line = _one_error_line(done)
    assert "model.init_from=zoo:no_such_row: no zoo row 'no_such_row' under outputs/zoo (" in line
    assert not out.exists()


def test_evaluating_on_data_of_other_classes_is_refused_before_inference(tiny_detection_run, tmp_path):
    from sasa_det.data import make_shapes_dataset

    paths = make_shapes_dataset(tmp_path / "other", num_train=1, num_val=2, image_size=64, classes=["star", "diamond"])
    done = _tool(
        "tools/eval.py",
        tiny_detection_run["last_checkpoint"],
        f"data.val_ann={paths['val_ann']}",
        f"data.val_images={paths['val_images']}",
        "--out",
        str(tmp_path / "eval"),
    )
    line = _one_error_line(done)
    assert "trained on 3 classes ['circle', 'square', 'triangle']" in line
    assert "has 2 classes ['star', 'diamond']" in line and "model.init_from=CHECKPOINT" in line
    assert "COCO evaluation" not in done.stdout  # refused before inference


def test_wandb_without_credentials_logs_offline_with_one_line(monkeypatch, tmp_path, caplog):
    from sasa_det.engine.run.loggers import check_trackers
    from sasa_det.experiment_loggers import LoggingOptions

    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with caplog.at_level("WARNING"):
        checked = check_trackers(LoggingOptions(loggers=["csv", "wandb"]))
    assert checked.offline
    assert [r.getMessage() for r in caplog.records if "wandb" in r.getMessage()] == [
        "logging.loggers has wandb but no W&B API key is set (WANDB_API_KEY or `wandb login`): logging offline "
        "into the run's wandb/ folder; upload it later with `wandb sync`"
    ]
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert not check_trackers(LoggingOptions(loggers=["csv", "wandb"])).offline


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_bad_annotation_file_is_reported_once_in_one_error(tmp_path, split):
    """The training split is checked in a child process (the check cache): its error comes back whole, once."""
    import json

    from sasa_det.data import make_shapes_dataset

    paths = make_shapes_dataset(tmp_path / "shapes", num_train=4, num_val=2, image_size=64)
    broken = json.loads(Path(paths[f"{split}_ann"]).read_text())
    broken["annotations"][0]["bbox"] = [5, 5, -3, 4]
    bad = tmp_path / f"broken_{split}.json"
    bad.write_text(json.dumps(broken))
    data = {**paths, f"{split}_ann": str(bad)}
    overrides = [o for o in tiny_shapes_overrides(tmp_path / "unused", tmp_path / "run") if "data.shapes" not in o]
    done = _tool("tools/train.py", str(DEMO_CONFIG), *overrides, *(f"data.{k}={v}" for k, v in data.items()))
    line = _one_error_line(done)
    assert bad.name in line
    assert done.stderr.count("[5, 5, -3, 4]") == 1  # the problem is listed once, not again by the child
