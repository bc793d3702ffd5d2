"""Reading checkpoint and weight files safely, with one clear message per way a file can be wrong.

Every file a user hands to the package (``tools/eval.py`` / ``tools/predict.py`` checkpoints,
``model.init_from``, backbone weights) is read here with ``torch.load(..., weights_only=True)``: only
tensors and plain containers are rebuilt, so nothing in the file is ever executed. A file that needs more
(a pickled model object, a pickle that would run code) is refused instead.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointFileError", "check_weights_file", "read_checkpoint_file", "tensors_of"]


class CheckpointFileError(ValueError):
    """A checkpoint or weight file cannot be used; the message names the file and what to do."""


def _exported_model_kind(file: Path) -> str | None:
    """What an exported model file is (``tools/export.py`` writes both), or None for anything else."""
    with open(file, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(file) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        if any(name.endswith("constants.pkl") or "/code/" in name for name in names):
            return "a TorchScript model (torch.jit.save / tools/export.py --format torchscript)"
        return None
    if file.suffix == ".onnx" or (head[:1] == b"\x08" and b"pytorch" in head and b"onnx" in head.lower()):
        return "an ONNX model (tools/export.py --format onnx)"
    return None


def check_weights_file(path: str | os.PathLike, what: str = "checkpoint") -> Path:
    """The cheap checks of :func:`read_checkpoint_file`, before any work starts: the file exists, is a file,
    is not empty and is not an exported model (ONNX, TorchScript). Returns the path.

    Raises:
        CheckpointFileError: naming the file, what it is, and what to give instead.
    """
    file = Path(path)
    if not file.exists():
        raise CheckpointFileError(f"{what} {file}: no such file; check the path")
    if file.is_dir():
        raise CheckpointFileError(f"{what} {file}: is a folder; give the .ckpt/.pth file inside it")
    if file.suffix == ".safetensors":
        raise CheckpointFileError(
            f"{what} {file}: a safetensors file, which this package does not read (safetensors is not among its "
            'dependencies); save it as a state dict first: python -c "import sys, torch, safetensors.torch as st; '
            'torch.save(st.load_file(sys.argv[1]), sys.argv[2])" FILE.safetensors FILE.pth'
        )
    if file.stat().st_size == 0:
        raise CheckpointFileError(f"{what} {file}: the file is empty (an interrupted copy or save?); use another copy")
    exported = _exported_model_kind(file)
    if exported is not None:
        raise CheckpointFileError(
            f"{what} {file}: is {exported}, a graph for inference that holds no trainable weights by name; give "
            "the .ckpt it was exported from (a checkpoint of the run that trained it) or a state_dict file"
        )
    return file


def read_checkpoint_file(path: str | os.PathLike, what: str = "checkpoint", mmap: bool = False) -> Any:
    """Load ``path`` with ``weights_only=True`` on the CPU and return the object it holds.

    Args:
        path: the file.
        what: what the file is meant to be, for the messages (e.g. ``"model.init_from weights"``).
        mmap: map the tensors' storage instead of reading it (for reading a checkpoint's small entries
            cheaply, whatever its size).

    Raises:
        CheckpointFileError: the file does not exist, is a folder, is empty or truncated, is not a PyTorch
            file at all, or holds objects that cannot be rebuilt without running code.
    """
    file = check_weights_file(path, what)
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        detail = [line for line in str(error).splitlines() if "Unsupported" in line or "load key" in line]
        first = detail[0].strip() if detail else type(error).__name__
        if "Unsupported global" in str(error) or "GLOBAL" in str(error):
            raise CheckpointFileError(
                f"{what} {file}: holds Python objects that could run code when loaded, so it is refused "
                "(only tensors and plain containers are read). Save a state_dict instead "
                "(torch.save(model.state_dict(), path)) or a checkpoint written by tools/train.py. "
                f"Loader said: {first}"
            ) from None
        raise CheckpointFileError(
            f"{what} {file}: not a PyTorch checkpoint (unreadable pickle: {first}); give a .ckpt written by "
            "tools/train.py or a file written by torch.save"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        text = str(error)
        with open(file, "rb") as handle:
            zipped = handle.read(4) == b"PK\x03\x04"  # torch.save's format: a zip archive
        if zipped or "zip archive" in text or isinstance(error, (EOFError, zipfile.BadZipFile)):
            raise CheckpointFileError(
                f"{what} {file}: the file is truncated or corrupt ({text.splitlines()[0] if text else type(error).__name__}); "
                "it was probably cut off while being written or copied; use an intact copy (e.g. another "
                "checkpoint of the run)"
            ) from None
        raise CheckpointFileError(
            f"{what} {file}: cannot be read as a PyTorch checkpoint ({text.splitlines()[0] if text else type(error).__name__})"
        ) from None
    except Exception as error:  # the unpickler fails in many ways on bytes that are no pickle at all
        raise CheckpointFileError(
            f"{what} {file}: not a PyTorch checkpoint (unreadable: {type(error).__name__}); give a .ckpt written by "
            "tools/train.py or a file written by torch.save"
        ) from None


def tensors_of(obj: Any, file: str | os.PathLike, what: str = "weights") -> dict[str, torch.Tensor]:
    """The tensor entries of a state dict, or of a Lightning checkpoint's ``state_dict``.

    Raises:
        CheckpointFileError: ``obj`` is neither (naming ``file``).
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    elif (
        isinstance(obj, Mapping)
        and isinstance(obj.get("model"), Mapping)
        and not any(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        obj = obj["model"]  # {"model": state_dict, ...} as detectron2/mmdetection-style exports write
    if not isinstance(obj, Mapping):
        raise CheckpointFileError(
            f"{what} {file}: holds a {type(obj).__name__}, not a state dict or a checkpoint with a 'state_dict'"
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointFileError(f"{what} {file}: holds no tensors (keys: {list(obj)[:8]}); is it a weights file?")
    return tensors
