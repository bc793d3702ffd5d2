"""Long runs survive: SIGKILL mid-epoch then --resume gives the uninterrupted run's weights and metrics bit
for bit; SIGTERM and SLURM's SIGUSR1 stop cleanly with a checkpoint (SLURM requeues and resumes by itself);
the final weights are always saved; checkpoints are written atomically; reruns and model changes are refused."""

import json
import os
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
BATCHES_PER_EPOCH = 6  # 12 training images, batch 2
MAX_STEPS = 10  # ends mid-epoch (epoch 1, batch 4 of 6), between validations


def _overrides(shapes: Path, out: Path, *extra: str) -> list[str]:
    run = dict(num_train=12, num_val=4, side=64, stage_ops="[conv, conv, sasa, aa]", val_batch=4, workers=1)
    steps = [f"trainer.max_steps={MAX_STEPS}", "trainer.max_epochs=-1", "trainer.checkpoint_every_n_steps=3"]
    return [*resumable_run_overrides(shapes, out, **run), *steps, *extra]


def _env(**extra: str) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1", **extra)


def _train_command(*args: str) -> list[str]:
    return [sys.executable, "tools/train.py", str(DEMO_CONFIG), *args]


def _run(args: list[str], env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        _train_command(*args), cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=timeout
    )


def _step_of(path: Path) -> tuple[int, int]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return int(checkpoint["global_step"]), int(checkpoint["epoch"])


def _start_and_signal_after_checkpoint(
    args: list[str], sig: int, env=None, process_group: bool = False
) -> tuple[subprocess.Popen, int]:
    """Start a training subprocess; once checkpoints/last.ckpt exists send ``sig`` (to its whole process group,
    loader workers included, with ``process_group``); return (process, step on disk)."""
    out = Path(next(a for a in args if a.startswith("output_dir=")).split("=", 1)[1])
    last = out / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        _train_command(*args),
        cwd=REPO,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=process_group,
    )
    deadline = time.monotonic() + 600
    while not last.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("training ended before writing a checkpoint:\n" + process.communicate()[1][-4000:])
        time.sleep(0.02)
    if process_group:
        os.killpg(process.pid, sig)  # what `timeout`, schedulers and container runtimes do
    else:
        process.send_signal(sig)
    return process, _step_of(last)[0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    out = root / "straight"
    completed = _run(_overrides(root / "shapes", out))
    assert completed.returncode == 0, completed.stderr[-4000:]
    return root, out


def test_final_weights_are_saved_when_training_ends_between_validations(uninterrupted):
    root, out = uninterrupted
    step, epoch = _step_of(out / "checkpoints" / "last.ckpt")
    assert (step, epoch) == (MAX_STEPS, MAX_STEPS // BATCHES_PER_EPOCH)  # not the step-6 validation's weights
    metrics = json.loads((out / "metrics.json").read_text())
    from sasa_det.engine.runner import evaluate

    evaluated = evaluate(
        out / "checkpoints" / "last.ckpt", ["trainer.enable_progress_bar=false"], output_dir=root / "eval"
    )
    assert evaluated["metrics"]["val/mAP"] == pytest.approx(metrics["val/mAP"], abs=1e-9)
    assert (out / "train.log").read_text().count("INFO") > 0  # the library's INFO messages reach the run's log


def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(uninterrupted):
    root, straight = uninterrupted
    out = root / "killed"
    args = _overrides(root / "shapes", out)
    process, _ = _start_and_signal_after_checkpoint(args, signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed_step, _ = _step_of(out / "checkpoints" / "last.ckpt")
    assert 0 < killed_step < MAX_STEPS
    csv_rows_before = (out / "logs" / "version_0" / "metrics.csv").read_text().count("\n")

    resumed = _run([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming from" in resumed.stderr
    assert _step_of(out / "checkpoints" / "last.ckpt") == _step_of(straight / "checkpoints" / "last.ckpt")
    a = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ from the uninterrupted run's in {different[:5]}"
    assert json.loads((out / "metrics.json").read_text()) == json.loads((straight / "metrics.json").read_text())
    assert (out / "logs" / "version_0" / "metrics.csv").read_text().count("\n") > csv_rows_before  # appended


def test_sigterm_saves_a_checkpoint_and_the_printed_hint_resumes_that_run(tmp_path):
    """The hint printed on a stop works when pasted: it names the run's folder, whatever overrides (data paths,
    output_dir) the interrupted command had, so it resumes that very run and no other."""
    import shlex

    out = tmp_path / "term"
    process, step_seen = _start_and_signal_after_checkpoint(
        _overrides(tmp_path / "shapes", out, "trainer.max_steps=24"), signal.SIGTERM
    )
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr
    step, _ = _step_of(out / "checkpoints" / "last.ckpt")
    assert step_seen <= step < 24
    hint = stderr.split("continue with: ")[1].splitlines()[0]
    assert hint == f"python tools/train.py --resume {shlex.quote(str(out))}"
    pasted = subprocess.run(
        [sys.executable, *shlex.split(hint)[1:]], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert pasted.returncode == 0, pasted.stderr[-3000:]
    assert f"resuming from {out / 'checkpoints' / 'last.ckpt'}" in pasted.stderr
    assert _step_of(out / "checkpoints" / "last.ckpt")[0] == 24
    assert (out / "metrics.json").is_file() and f'"output_dir": "{out}"' in pasted.stdout


def test_sigterm_to_the_process_group_with_loader_workers_saves_and_exits_cleanly(tmp_path):
    out = tmp_path / "group"
    args = _overrides(tmp_path / "shapes", out, "trainer.max_steps=200", "data.num_workers=2")
    process, step_seen = _start_and_signal_after_checkpoint(args, signal.SIGTERM, process_group=True)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr and "DataLoader worker" not in stderr, stderr[-3000:]
    step, _ = _step_of(out / "checkpoints" / "last.ckpt")
    assert step_seen <= step < 200


def test_slurm_sigusr1_requeues_and_the_requeued_job_resumes_by_itself(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls.txt"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODELIST": "localhost",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    out = tmp_path / "slurm"
    args = _overrides(tmp_path / "shapes", out, "trainer.max_steps=14")
    process, _ = _start_and_signal_after_checkpoint(args, signal.SIGUSR1, env=_env(**slurm))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGUSR1, stderr[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    assert "requeued" in stderr
    step, _ = _step_of(out / "checkpoints" / "last.ckpt")
    assert step < 14

    # SLURM reruns the same command with SLURM_RESTART_COUNT set: no --resume needed.
    requeued = _run(args, env=_env(**slurm, SLURM_RESTART_COUNT="1"))
    assert requeued.returncode == 0, requeued.stderr[-4000:]
    assert "requeued SLURM job (restart 1): resuming from" in requeued.stderr
    assert _step_of(out / "checkpoints" / "last.ckpt")[0] == 14


def test_rerun_into_a_used_folder_and_model_changes_on_resume_are_refused(uninterrupted):
    root, out = uninterrupted
    args = _overrides(root / "shapes", out)
    rerun = _run(args)
    assert rerun.returncode != 0 and "already holds a run" in rerun.stderr and "--resume" in rerun.stderr
    changed = _run([*args, "model.fpn_channels=64", "--resume"])
    assert changed.returncode != 0
    assert "model.fpn_channels: 32 in the checkpoint, 64 now" in changed.stderr
    nothing = _run(_overrides(root / "shapes", root / "never_trained") + ["--resume"])
    assert nothing.returncode != 0 and "no checkpoint at" in nothing.stderr


def test_atomic_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    from sasa_det.engine.run.checkpoint_io import AtomicCheckpointIO
    from sasa_det.engine.run.run_directory import RunDirectory

    io = AtomicCheckpointIO(RunDirectory(tmp_path))
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, target)

    def dies_half_way(obj, handle):
        handle.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt  # the process is killed while writing

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(2)}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def _fake_cuda(monkeypatch, devices: int, current: int = 0) -> list[tuple[int, int]]:
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((int(state[0]), device)))
    return restored


@pytest.mark.parametrize(
    "saved, visible, expected", [(4, 2, [(0, 0), (1, 1)]), (1, 4, [(0, 0)]), (2, 2, [(0, 0), (1, 1)])]
)
def test_cuda_generator_states_restore_onto_the_gpus_that_exist(monkeypatch, caplog, saved, visible, expected):
    from sasa_det.engine.run.rng_state import _set_cuda_rng_state

    restored = _fake_cuda(monkeypatch, visible)
    states = [torch.tensor([index], dtype=torch.uint8) for index in range(saved)]  # an older checkpoint: one per GPU
    with caplog.at_level("INFO"):
        _set_cuda_rng_state({"cuda": states})
    assert restored == expected
    notes = [record.getMessage() for record in caplog.records if "CUDA generator states for" in record.getMessage()]
    assert len(notes) == (saved != visible)
    if notes:
        assert f"for {saved} GPUs and {visible} are visible" in notes[0]


def test_cuda_generator_state_of_this_process_goes_to_its_device(monkeypatch):
    from sasa_det.engine.run.rng_state import _set_cuda_rng_state

    restored = _fake_cuda(monkeypatch, devices=2, current=1)  # e.g. local rank 1 of a DDP run
    _set_cuda_rng_state({"cuda": [torch.tensor([7], dtype=torch.uint8)], "cuda_device": 3})  # saved by rank 3 of 8
    assert restored == [(7, 1)]
