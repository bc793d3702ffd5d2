"""Scale-out on one machine: two "nodes" of one process each (gloo, the environment variables a cluster sets)
train together, and their COCO metrics equal a single process's on the same weights; classification
validation under DDP counts every image exactly once."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import REPO, tiny_classification_overrides, tiny_shapes_overrides, train_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_env(node_rank: int, port: int) -> dict:
    return dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        NODE_RANK=str(node_rank),
        LOCAL_RANK="0",
        WORLD_SIZE="2",
    )


def test_two_nodes_train_and_match_single_process_metrics(tmp_path):
    out = tmp_path / "two_nodes"
    args = train_command(
        *tiny_shapes_overrides(tmp_path / "shapes", out),  # 5 validation images: the nodes validate 3 and 2
        "trainer.max_steps=3",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "trainer.strategy=ddp",
        "trainer.enable_progress_bar=false",
        "eval.save_visualization=0",
    )
    port = _free_port()
    nodes = [
        subprocess.Popen(
            args, cwd=REPO, env=_node_env(rank, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (stdout, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stdout[-2000:] + stderr[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1][1]  # the second node joined the process group
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val/num_images"] == 5  # both nodes' predictions gathered, each image once
    import torch

    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3

    from sasa_det.engine.runner import evaluate

    single = evaluate(
        out / "checkpoints" / "last.ckpt",
        ["trainer.num_nodes=1", "trainer.strategy=auto", "trainer.enable_progress_bar=false"],
        output_dir=tmp_path / "eval",
    )
    for key in ("val/mAP", "val/AP50", "val/AP75", "val/num_images"):
        assert single["metrics"][key] == pytest.approx(metrics[key], abs=1e-9), key


def test_classification_validation_under_ddp_counts_every_image_once(tmp_path):
    from sasa_det.data import make_image_folder_dataset
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.runner import evaluate, train

    # 3 classes x 3 validation images = 9: two ranks see 5 and 4; a padding sampler would count 10.
    folders = make_image_folder_dataset(tmp_path / "folders", num_train_per_class=4, num_val_per_class=3, image_size=32)
    cfg = load_config(None, [*tiny_classification_overrides(folders, tmp_path / "cls"), "data.val_batch_size=2"])
    result = train(cfg)
    assert result["metrics"]["val/num_images"] == 9
    command = [
        sys.executable,
        "tools/eval.py",
        result["last_checkpoint"],
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.accelerator=cpu",
        "--out",
        str(tmp_path / "ddp_eval"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    ddp = json.loads((tmp_path / "ddp_eval" / "metrics.json").read_text())
    single = evaluate(result["last_checkpoint"], ["trainer.enable_progress_bar=false"], output_dir=tmp_path / "eval")[
        "metrics"
    ]
    assert ddp["val/num_images"] == 9
    for key in ("val/top1", "val/loss"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key
