"""Faults injected into real ``tools/train.py`` runs (tiny model, CPU): a run resumed after the fault ends
where the uninterrupted run ends (same global step, same epochs validated, same weights and metrics, the
whole logged history), whichever bound ends it and wherever the fault lands; where nothing can be
recovered the message names the file and what to do."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import resumable_run_overrides

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "shapes_demo.yaml"
STEPS_PER_EPOCH = 4  # 8 training images, batch 2

#: How a run is bounded: (overrides, final global step of an uninterrupted run).
BOUNDS = {
    "max_epochs": (["trainer.max_epochs=3", "trainer.max_steps=-1"], 12),
    "max_epochs_with_large_max_steps": (["trainer.max_epochs=3", "trainer.max_steps=1000"], 12),
    "max_steps_mid_epoch": (["trainer.max_epochs=-1", "trainer.max_steps=10"], 10),
}

#: Where the fault lands: (fault, overrides that place the checkpoints).
FAULTS = {
    # last.ckpt every 3 steps: step 6 is the middle of epoch 1
    "kill_mid_epoch": ("kill-after-last:6", ["trainer.checkpoint_every_n_steps=3"]),
    # last.ckpt only at epoch ends (after the epoch's validation)
    "kill_at_epoch_end": ("kill-after-last:8", ["trainer.checkpoint_every_n_steps=1000"]),
    # last.ckpt every epoch length: the step-8 checkpoint is written at the epoch's end, after its validation
    "kill_after_last_batch": ("kill-after-last:8", ["trainer.checkpoint_every_n_steps=4"]),
    "sigterm_during_validation": ("sigterm-in-validation:1", ["trainer.checkpoint_every_n_steps=1000"]),
    "kill_during_checkpoint_write": ("kill-during-last:8", ["trainer.checkpoint_every_n_steps=1000"]),
}


def _overrides(shapes: Path, out: Path, *extra: str) -> list[str]:
    small = dict(num_train=8, num_val=2, side=48, stage_ops="[conv, conv, conv, sasa]", val_batch=2, workers=0)
    # model.num_classes=null: taken from the data; the same command plus --resume must be accepted
    return [*resumable_run_overrides(shapes, out, **small), "model.num_classes=null", *extra]


def _run(fault: str, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "tests.fault_injection", fault, "tools/train.py", str(DEMO_CONFIG), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _validations(stdout: str) -> list[tuple[int, int]]:
    """(epoch, step) of every COCO evaluation the run printed."""
    return [(int(e), int(s)) for e, s in re.findall(r"COCO evaluation \(epoch (\d+), step (\d+)\)", stdout)]


def _logged_steps(out: Path) -> list[int]:
    """Steps of the training-loss rows of ``metrics.csv``, in file order."""
    with open(out / "logs" / "version_0" / "metrics.csv") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]


def _checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """bound name -> (output_dir, validations printed) of the run without faults, computed on first use."""
    root = tmp_path_factory.mktemp("faults")
    runs: dict[str, tuple[Path, list[tuple[int, int]]]] = {}

    def get(bound: str) -> tuple[Path, Path, list[tuple[int, int]]]:
        if bound not in runs:
            out = root / f"straight_{bound}"
            done = _run("none", _overrides(root / "shapes", out, *BOUNDS[bound][0]))
            assert done.returncode == 0, done.stderr[-4000:]
            runs[bound] = (out, _validations(done.stdout))
        return (root, *runs[bound])

    return get


#: The cases the default suite runs (each costs three short trainings); the others are marked slow.
_DEFAULT_CASES = {
    ("max_epochs_with_large_max_steps", "kill_at_epoch_end"),
    ("max_epochs", "kill_mid_epoch"),
    ("max_epochs", "kill_after_last_batch"),
}


@pytest.mark.parametrize(
    "bound, fault_name",
    [pytest.param(b, f, marks=() if (b, f) in _DEFAULT_CASES else pytest.mark.slow) for b in BOUNDS for f in FAULTS],
)
def test_a_resumed_run_ends_where_the_uninterrupted_run_ends(uninterrupted, bound, fault_name):
    root, straight, straight_validations = uninterrupted(bound)
    bound_overrides, final_step = BOUNDS[bound]
    fault, placement = FAULTS[fault_name]
    out = root / f"{bound}_{fault_name}"
    args = _overrides(root / "shapes", out, *bound_overrides, *placement)
    faulty = _run(fault, args)
    assert faulty.returncode != 0, "the fault did not stop the run"
    resumed_from = int(_checkpoint(out)["global_step"])
    resumed = _run("none", [*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    assert int(_checkpoint(out)["global_step"]) == final_step
    validations = sorted(set(_validations(faulty.stdout)) | set(_validations(resumed.stdout)))
    assert validations == sorted(
        set(straight_validations)
    )  # every epoch validated once more after the fault, none skipped
    assert json.loads((out / "metrics.json").read_text()) == json.loads((straight / "metrics.json").read_text())
    a, b = _checkpoint(out)["state_dict"], _checkpoint(straight)["state_dict"]
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    # The history before the fault is kept, nothing twice. The row of the checkpoint's own step is logged
    # just after a mid-epoch checkpoint is written: a kill at that instant loses that one row.
    logged, expected = _logged_steps(out), _logged_steps(straight)
    assert logged == sorted(set(logged)) and set(expected) - set(logged) <= {resumed_from - 1}
    assert set(logged) <= set(expected)
    assert not list((out / "checkpoints").glob(".*tmp*")) and not (out / ".run.lock").exists()


def _short_run(root: Path, name: str, *extra: str) -> tuple[Path, list[str]]:
    out = root / name
    return out, _overrides(root / "shapes", out, "trainer.max_epochs=-1", "trainer.max_steps=10", *extra)


def test_a_full_disk_names_the_file_and_the_space_and_keeps_the_previous_checkpoint(tmp_path):
    out, args = _short_run(tmp_path, "full", "trainer.checkpoint_every_n_steps=4")
    failed = _run("disk-full-during-last:8", args)  # the kernel answers ENOSPC for the step-8 write
    assert failed.returncode == 1, failed.stderr[-3000:]
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ") and "no space left on device while writing" in message, message
    assert str(out / "checkpoints" / "last.ckpt") in message and "MB are free" in message
    assert "needs about" in message and "the previous last.ckpt" in message and "is intact" in message
    assert int(_checkpoint(out)["global_step"]) == 4  # the previous checkpoint, whole
    assert not list((out / "checkpoints").glob(".*tmp*"))
    assert not (out / "metrics.json").exists()


@pytest.mark.slow
def test_partial_checkpoint_files_are_removed_on_resume_and_counted(tmp_path):
    out, args = _short_run(tmp_path, "partial", "trainer.checkpoint_every_n_steps=3")
    killed = _run("kill-during-last:6", args)
    assert killed.returncode == -9
    partial = list((out / "checkpoints").glob(".last.ckpt.tmp-*"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0
    assert int(_checkpoint(out)["global_step"]) == 3
    resumed = _run("none", [*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "removed 1 partial checkpoint file(s)" in resumed.stderr
    assert "taking over the run lock" in resumed.stderr and "no longer runs" in resumed.stderr  # SIGKILL left it
    assert not list((out / "checkpoints").glob(".*tmp*")) and not (out / ".run.lock").exists()
    assert int(_checkpoint(out)["global_step"]) == 10


@pytest.mark.slow
def test_a_changed_training_set_is_refused_on_resume_or_restarts_the_order_when_allowed(tmp_path):
    out, args = _short_run(tmp_path, "changed", "trainer.checkpoint_every_n_steps=3")
    assert _run("kill-after-last:6", args).returncode == -9
    fewer = [*args, f"data.shapes.root={tmp_path / 'fewer'}", "data.shapes.num_train=6", "--resume"]
    refused = _run("none", fewer)
    assert refused.returncode == 1
    message = refused.stderr.strip().splitlines()[-1]
    assert "the training set changed since the checkpoint" in message
    assert "was trained on 8 images" in message and "now: 6 images" in message
    assert "trainer.resume_with_changed_data=true" in message
    assert int(_checkpoint(out)["global_step"]) == 6  # nothing trained, nothing written

    allowed = _run("none", [*fewer, "trainer.resume_with_changed_data=true"])
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "THE TRAINING SET CHANGED since the checkpoint" in allowed.stderr
    assert "epoch 1 ends at step 6; epoch 2 starts from the first batch" in allowed.stderr
    checkpoint = _checkpoint(out)
    # epoch 2 has 3 batches of the 6 images (steps 7-9), step 10 is epoch 3's first
    assert (int(checkpoint["global_step"]), int(checkpoint["epoch"])) == (10, 3)


@pytest.mark.slow
def test_resuming_a_finished_run_says_so_and_any_checkpoint_of_the_run_resumes(tmp_path):
    out, args = _short_run(tmp_path, "finished", "trainer.checkpoint_every_n_steps=3")
    assert _run("none", args).returncode == 0
    last_written = (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    again = _run("none", [*args, "--resume"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"the run in {out} is finished: step 10 of trainer.max_steps=10" in again.stderr
    assert str(out / "metrics.json") in again.stderr
    assert (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns == last_written  # nothing trained again
    assert json.loads(again.stdout)["metrics"] == json.loads((out / "metrics.json").read_text())

    best = next((out / "checkpoints").glob("best-*.ckpt"))  # epoch 1's validation, step 8
    fresh = tmp_path / "from_best"
    moved = [a if not a.startswith("output_dir=") else f"output_dir={fresh}" for a in args]
    continued = _run("none", [*moved, "--resume", str(best)])
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert int(_checkpoint(fresh)["global_step"]) == 10
    assert (fresh / "metrics.json").exists()


def test_a_second_training_into_a_used_output_dir_is_refused_naming_the_first(tmp_path):
    out, args = _short_run(
        tmp_path,
        "locked",
        "data.shapes.num_train=400",
        "trainer.max_steps=400",
        "trainer.checkpoint_every_n_steps=1000",
    )  # no checkpoint for 200 steps: the second start meets the lock, not the first's checkpoints
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    first = subprocess.Popen(
        [sys.executable, "tools/train.py", str(DEMO_CONFIG), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = out / ".run.lock"
        deadline = time.monotonic() + 300
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.exists(), "the first training took no lock"
        second = _run("none", args)
        assert second.returncode == 1
        message = second.stderr.strip().splitlines()[-1]
        assert f"output_dir {out} is in use by another training (pid {first.pid} on " in message
        assert "train into another output_dir" in message and str(lock) in message
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert not lock.exists()  # released by the clean stop


@pytest.mark.slow
def test_a_non_finite_loss_stops_with_a_message_and_the_last_checkpoint_resumes(tmp_path):
    out, args = _short_run(tmp_path, "nan", "trainer.checkpoint_every_n_steps=3")
    failed = _run("nan-loss:7", args)
    assert failed.returncode == 1, failed.stderr[-3000:]
    message = failed.stderr.strip().splitlines()[-1]
    assert "error: non-finite training loss at step 7" in message and "lower optim.lr" in message
    assert "--resume optim.lr=" in message and "Traceback" not in failed.stderr
    assert int(_checkpoint(out)["global_step"]) == 6 and not (out / ".run.lock").exists()
    resumed = _run("none", [*args, "--resume", "optim.lr=0.001"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert int(_checkpoint(out)["global_step"]) == 10


def _file_hashes(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_another_runs_checkpoints_are_only_read_by_resume_and_init_from(uninterrupted, tmp_path):
    """A run started from another run's best or last checkpoint (``--resume CKPT`` into a new output_dir, or
    ``model.init_from``) leaves every file of that run byte-identical, and a best checkpoint (written after
    its epoch's validation) resumes without the "no validation" warning."""
    _, source, _ = uninterrupted("max_epochs")
    before = _file_hashes(source)
    best = next((source / "checkpoints").glob("best-*.ckpt"))
    moved = _overrides(tmp_path / "shapes", tmp_path / "from_best", *BOUNDS["max_epochs"][0])
    from_best = _run("none", [*moved, "--resume", str(best)])
    assert from_best.returncode == 0, from_best.stderr[-3000:]
    assert "has no validation metrics" not in from_best.stderr
    started = _overrides(tmp_path / "shapes", tmp_path / "init", "trainer.max_epochs=-1", "trainer.max_steps=1")
    from_last = _run("none", [*started, f"model.init_from={source / 'checkpoints' / 'last.ckpt'}"])
    assert from_last.returncode == 0, from_last.stderr[-3000:]
    report = json.loads((tmp_path / "init" / "init_from_report.json").read_text())
    assert report["source"] == str(source / "checkpoints" / "last.ckpt") and report["loaded"]
    assert _file_hashes(source) == before
    assert list((tmp_path / "from_best" / "checkpoints").glob("best-*.ckpt"))  # the new run has its own best


def test_a_sigterm_while_a_training_prepares_is_an_interruption_that_releases_the_lock(tmp_path):
    """Before ``fit`` installs its clean stop, SIGTERM raises TrainingInterrupted (not a kill), so the lock's
    context exits and removes the lock file; the previous handler comes back afterwards."""
    from sasa_det.engine.run.run_directory import RunDirectory
    from sasa_det.engine.run.run_lock import RunLock
    from sasa_det.engine.run.signals import TrainingInterrupted, stop_on_sigterm_outside_fit

    run_dir = RunDirectory(tmp_path / "run")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match="SIGTERM while preparing; no checkpoint could be written"):
        with stop_on_sigterm_outside_fit(), RunLock(run_dir):
            assert run_dir.lock_file.exists()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert not run_dir.lock_file.exists()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_during_the_final_evaluation_names_the_finished_checkpoint(tmp_path, monkeypatch):
    """Training ends mid-epoch (2 of 4 steps), so the final weights are evaluated after ``fit``; a SIGTERM there
    says training had finished and names last.ckpt (which is on disk), and the lock is released."""
    import pytorch_lightning as pl

    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.run.signals import TrainingInterrupted
    from sasa_det.engine.runner import train
    from tests.helpers import tiny_shapes_overrides

    validate = pl.Trainer.validate

    def terminated_validate(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        return validate(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "validate", terminated_validate)
    out = tmp_path / "run"
    cfg = load_config(DEMO_CONFIG, [*tiny_shapes_overrides(tmp_path / "shapes", out), "trainer.accelerator=cpu"])
    with pytest.raises(TrainingInterrupted) as raised:
        train(cfg)
    last = out / "checkpoints" / "last.ckpt"
    assert str(raised.value) == (
        f"training stopped by SIGTERM during the final evaluation (training had finished); saved {last} at step 2"
    )
    assert raised.value.checkpoint == last and last.is_file()
    assert not (out / ".run.lock").exists()
