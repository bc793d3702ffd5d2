"""Run a tool of ``tools/`` with one fault injected into its real code path (for the fault-tolerance tests).

Usage::

    python -m tests.fault_injection FAULT tools/train.py CONFIG [overrides...] [--resume]

FAULT is one of

* ``none`` - no fault (so every run of a test goes through the same launcher)
* ``kill-after-last:STEP`` - SIGKILL right after ``last.ckpt`` of global step STEP is complete on disk
* ``kill-during-last:STEP`` - SIGKILL while ``last.ckpt`` of step STEP is half written (its temporary file
  holds the first half of the bytes, flushed to disk)
* ``disk-full-during-last:STEP`` - the write of ``last.ckpt`` of step STEP goes to ``/dev/full``: the
  kernel answers ENOSPC exactly as a full disk does, through torch's own writer
* ``sigterm-in-validation:EPOCH`` - SIGTERM to this process at the first batch of epoch EPOCH's validation
* ``nan-loss:STEP`` - the detector's losses are NaN at global step STEP

Several faults can be given separated by commas. Nothing here is imported by the package.
"""

from __future__ import annotations

import builtins
import io
import os
import runpy
import signal
import sys
from pathlib import Path


def _install(fault: str) -> None:
    if fault == "none":
        return
    kind, _, value = fault.partition(":")
    number = int(value)
    from sasa_det.engine.run import checkpoint_io, run_directory

    if kind in ("kill-after-last", "kill-during-last", "disk-full-during-last"):
        original = checkpoint_io.AtomicCheckpointIO.save_checkpoint

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            hit = Path(path).name == "last.ckpt" and int(checkpoint.get("global_step", -1)) == number
            if hit and kind == "kill-during-last":
                real_save = checkpoint_io.torch.save

                def half_then_die(obj, handle):
                    buffer = io.BytesIO()
                    real_save(obj, buffer)
                    handle.write(buffer.getvalue()[: buffer.tell() // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)

                checkpoint_io.torch.save = half_then_die
            if hit and kind == "disk-full-during-last":
                real_open = builtins.open

                def open_full(file, mode="r", *args, **kwargs):
                    if ".tmp-" in str(file) and "w" in mode:
                        return real_open("/dev/full", mode, *args, **kwargs)
                    return real_open(file, mode, *args, **kwargs)

                run_directory.open = open_full  # the module's name `open`, ahead of the builtin
            original(self, checkpoint, path, storage_options)
            if hit and kind == "kill-after-last":
                os.kill(os.getpid(), signal.SIGKILL)

        checkpoint_io.AtomicCheckpointIO.save_checkpoint = save_checkpoint
    elif kind == "sigterm-in-validation":
        from sasa_det.engine.tasks.callbacks import ValidationRecorder

        def on_validation_batch_start(self, trainer, *args, **kwargs):
            if not trainer.sanity_checking and trainer.current_epoch == number and not getattr(self, "_sent", False):
                self._sent = True
                os.kill(os.getpid(), signal.SIGTERM)

        ValidationRecorder.on_validation_batch_start = on_validation_batch_start
    elif kind == "nan-loss":
        import torch

        from sasa_det.engine.tasks.detection_module import DetectionModule

        original_step = DetectionModule.training_step

        def training_step(self, batch, batch_idx):
            if self.global_step != number:
                return original_step(self, batch, batch_idx)
            model = self.model
            self.model = lambda images, targets: {"classification": torch.tensor(float("nan"))}
            try:
                return original_step(self, batch, batch_idx)
            finally:
                self.model = model

        DetectionModule.training_step = training_step
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def main() -> None:
    faults, tool, *args = sys.argv[1:]
    for fault in faults.split(","):
        _install(fault)
    sys.argv = [tool, *args]
    runpy.run_path(tool, run_name="__main__")


if __name__ == "__main__":
    main()
