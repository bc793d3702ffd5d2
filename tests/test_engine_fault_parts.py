"""Parts of surviving faults: the run directory's lock (a live holder refused by name, a dead or requeued one
taken over), partial checkpoint files removed, the training set's fingerprint, a null class count on resume."""

import json
import os
import socket
import subprocess
import sys

import pytest

from sasa_det.engine.run.run_directory import RunDirectory
from sasa_det.engine.run.run_lock import RunLock, RunLocked

LOCK_NAME = RunDirectory(".").lock_file.name


def _holder(tmp_path, **fields):
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": 0, "command": "train.py a.yaml"}
    record.update(fields)
    (tmp_path / LOCK_NAME).write_text(json.dumps(record))


def test_the_lock_is_taken_and_released(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        held = json.loads(lock.path.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_live_holder_is_refused_by_name(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _holder(tmp_path, pid=sleeper.pid)
        with pytest.raises(RunLocked, match=rf"in use by another training \(pid {sleeper.pid} on .*train.py a.yaml"):
            RunLock(tmp_path).acquire()
        _holder(tmp_path, host="another-node", pid=1)  # cannot be checked from here: refused, with the way out
        with pytest.raises(RunLocked, match=f"delete {tmp_path / LOCK_NAME}"):
            RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dead_holder_or_this_requeued_slurm_job_is_taken_over(tmp_path, monkeypatch, caplog):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _holder(tmp_path, pid=int(finished.stdout))  # that process has exited
    with RunLock(tmp_path):
        pass
    assert "no longer runs" in caplog.text
    _holder(tmp_path, host="another-node", pid=1, slurm_job_id="77")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    with RunLock(tmp_path):
        pass
    assert "belongs to this SLURM job (77), which was requeued" in caplog.text
    (tmp_path / LOCK_NAME).write_text('{"host": "x", "pi')  # its writer was killed while writing it
    with RunLock(tmp_path):
        pass


def test_a_null_class_count_is_no_model_change_on_resume():
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.run.resume import config_differences

    stored = load_config(overrides=["model.num_classes=3"])
    assert config_differences(stored, load_config(overrides=["model.num_classes=null"])) == []
    changed = config_differences(stored, load_config(overrides=["model.num_classes=4"]))
    assert changed == [("model.num_classes", 3, 4)]


def test_partial_checkpoint_files_of_killed_writes_are_removed_and_counted(tmp_path):
    run = RunDirectory(tmp_path)
    run.checkpoints_dir.mkdir()
    (run.checkpoints_dir / "last.ckpt").write_bytes(b"whole")
    (run.checkpoints_dir / ".last.ckpt.tmp-123").write_bytes(b"x" * 1000)
    (run.checkpoints_dir / ".best-epoch001-step000008.ckpt.tmp-7").write_bytes(b"x" * 24)
    assert run.remove_partial_checkpoints() == (2, 1024)
    assert [p.name for p in run.checkpoints_dir.iterdir()] == ["last.ckpt"]
    assert RunDirectory(tmp_path / "missing").remove_partial_checkpoints() == (0, 0)


def test_a_changed_training_set_is_named_on_both_sides(tmp_path):
    from sasa_det.config import ConfigError
    from sasa_det.engine.run.data_fingerprint import check_training_data, training_set_fingerprint

    class Dataset:
        def __init__(self, ids):
            self.image_ids = ids

        def __len__(self):
            return len(self.image_ids)

    annotations = tmp_path / "train.json"
    annotations.write_text("{}")
    saved = training_set_fingerprint(Dataset([1, 2, 3]), annotations)
    assert (
        check_training_data(saved, training_set_fingerprint(Dataset([1, 2, 3]), annotations), "c.ckpt", False) is None
    )
    assert check_training_data(None, saved, "old.ckpt", False) is None  # written before fingerprints existed
    for changed in (Dataset([1, 2]), Dataset([3, 2, 1])):  # fewer images; the same images in another order
        now = training_set_fingerprint(changed, annotations)
        with pytest.raises(ConfigError, match=r"was trained on 3 images .*; now: \d images"):
            check_training_data(saved, now, "c.ckpt", allow=False)
        assert "now:" in check_training_data(saved, now, "c.ckpt", allow=True)
    annotations.write_text('{"edited": 1}')  # same images, edited annotations
    with pytest.raises(ConfigError, match="resume_with_changed_data=true"):
        check_training_data(saved, training_set_fingerprint(Dataset([1, 2, 3]), annotations), "c.ckpt", False)
