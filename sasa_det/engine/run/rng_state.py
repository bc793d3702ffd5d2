"""The random generators' state in every checkpoint, restored before the first batch after a resume.

:class:`RngStateCheckpoint` stores the generators of Python, NumPy and torch (CPU and this process's CUDA
device) with each checkpoint and puts them back before the first training batch of a resumed run (the data
order and augmentations do not depend on them: see :mod:`sasa_det.data`'s samplers; models that sample,
such as the R-CNN heads, do), so a resumed run draws the same random numbers as an uninterrupted one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch

__all__ = ["RngStateCheckpoint"]

logger = logging.getLogger(__name__)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # this process's device only: asking every visible GPU would open a CUDA context on each of them
        state["cuda"] = [torch.cuda.get_rng_state()]
        state["cuda_device"] = torch.cuda.current_device()
    return state


def _set_cuda_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the saved CUDA generator states onto the devices that exist now.

    Checkpoints hold the state of the saving process's device (``cuda_device`` set), which goes to the
    current device; older ones hold one state per visible device, restored onto the devices that exist
    (a run resumed on fewer or more GPUs than it was saved with gets a note, not an IndexError).
    """
    states = list(state["cuda"])
    available = torch.cuda.device_count()
    if not states or available == 0:
        if states:
            logger.info(
                "Resume: the checkpoint has CUDA generator states but no GPU is visible; they are not restored."
            )
        return
    if "cuda_device" in state:
        torch.cuda.set_rng_state(states[0], torch.cuda.current_device())
        return
    for index, device_state in enumerate(states[:available]):
        torch.cuda.set_rng_state(device_state, index)
    if len(states) != available:
        logger.info(
            "Resume: the checkpoint has CUDA generator states for %d GPUs and %d are visible now; restored %d, "
            "the others keep their seeded state.",
            len(states),
            available,
            min(len(states), available),
        )


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_as_python_state(state["python"]))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(position), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        _set_cuda_rng_state(state)


def _as_python_state(value: Any) -> tuple:
    # weights_only loading turns the state's tuples into lists; random.setstate wants tuples.
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


class RngStateCheckpoint(pl.Callback):
    """Saves the random generators' state with each checkpoint and restores it before the first training
    batch after a resume, so a resumed run draws the same random numbers as an uninterrupted one."""

    def __init__(self) -> None:
        self._pending: Optional[dict[str, Any]] = None

    def state_dict(self) -> dict[str, Any]:
        state = _rng_state()
        name, keys, position, has_gauss, cached = state["numpy"]
        # Tensors and plain values only, so that the checkpoint loads with weights_only=True.
        state["numpy"] = [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_train_batch_start(self, *args: Any) -> None:
        if self._pending is not None:
            _set_rng_state(self._pending)
            self._pending = None
