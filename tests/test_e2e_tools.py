"""The command-line tools end to end: DDP detection training as a subprocess, classification through
``tools/train.py``, and ``tools/eval.py`` / ``tools/predict.py`` on the resulting checkpoints."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import DEMO_CONFIG, REPO, load_tool, tiny_shapes_overrides, train_command


def test_ddp_training_subprocess_evaluates_every_image_once(tmp_path):
    out = tmp_path / "ddp"
    command = train_command(
        *tiny_shapes_overrides(tmp_path / "shapes", out),  # 5 validation images: the two ranks take 3 and 2
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.accelerator=cpu",
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val/num_images"] == 5  # gathered from both ranks, each image once
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "predictions.png").is_file()

    # A single-process evaluation of the same weights scores the same images: same numbers.
    evaluated = load_tool("eval").main(
        [
            str(out / "checkpoints" / "last.ckpt"),
            "trainer.devices=1",
            "trainer.strategy=auto",
            "trainer.accelerator=cpu",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert evaluated["metrics"]["val/num_images"] == 5
    assert evaluated["metrics"]["val/mAP"] == pytest.approx(metrics["val/mAP"], abs=1e-4)
    assert (tmp_path / "eval" / "detections_bbox.json").is_file()


def test_classification_through_train_tool_then_eval_tool(tmp_path):
    from sasa_det.data import make_image_folder_dataset

    folders = make_image_folder_dataset(tmp_path / "folders", num_train_per_class=8, num_val_per_class=4, image_size=32)
    config = tmp_path / "cls.yaml"
    config.write_text(
        "task: classification\n"
        f"output_dir: {tmp_path / 'cls'}\n"
        f"data:\n  train_dir: {folders['train']}\n  val_dir: {folders['val']}\n  batch_size: 8\n  num_workers: 0\n"
        "classifier:\n  backbone: {name: resnet26, base_width: 8}\n  image_size: 32\n"
        "optim:\n  name: adamw\n  lr: 0.003\n  weight_decay: 0.0\n"
        "trainer:\n  max_epochs: 2\n  accelerator: cpu\n  devices: 1\n  enable_progress_bar: false\n  log_every_n_steps: 1\n"
    )
    result = load_tool("train").main([str(config)])
    assert "val/top1" in result["metrics"]
    assert Path(result["best_checkpoint"]).is_file()
    evaluated = load_tool("eval").main([result["last_checkpoint"], "--out", str(tmp_path / "eval")])
    assert evaluated["metrics"]["val/top1"] == pytest.approx(result["metrics"]["val/top1"], abs=1e-6)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["val/top1"] == pytest.approx(
        result["metrics"]["val/top1"]
    )


def test_train_tool_reports_config_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="optim.lrr"):
        load_tool("train").main([str(DEMO_CONFIG), "optim.lrr=0.1"])
    with pytest.raises(SystemExit, match="not found"):
        load_tool("train").main([str(tmp_path / "missing.yaml")])


@pytest.mark.parametrize("tool", ["eval", "predict"])
def test_tools_refuse_bad_checkpoint_files_with_one_clear_message(tool, tmp_path):
    """A missing, truncated or non-checkpoint file ends the tool with a message naming the file: no traceback."""
    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    extra = [str(image), "--out", str(tmp_path / "out")] if tool == "predict" else []
    (tmp_path / "cut.ckpt").write_bytes(b"PK\x03\x04" + b"\0" * 200)
    (tmp_path / "text.ckpt").write_text("hello")
    for name, message in (
        ("missing.ckpt", "no such file"),
        ("cut.ckpt", "the file is truncated or corrupt"),
        ("text.ckpt", "not a PyTorch checkpoint"),
    ):
        with pytest.raises(SystemExit) as stop:
            load_tool(tool).main([str(tmp_path / name), *extra])
        assert f"{name}: {message}" in str(stop.value.code)
