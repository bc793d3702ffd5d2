"""What a run was trained on, to tell on resume whether the training set is still the same.

A checkpoint's data position (epoch, batches done, see :mod:`sasa_det.data.loading.sampling`) indexes a
permutation of the training set's images. If the set changed since the checkpoint (images added, removed
or reordered, annotations edited), the same position means other images: the resumed run would silently
train on a different sequence. The fingerprint is stored in every checkpoint and compared when a run
resumes (:func:`check_training_data`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from sasa_det.config import ConfigError

__all__ = ["check_training_data", "training_set_fingerprint"]

_CHUNK = 1 << 22


def _file_sha1(path: str | os.PathLike) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _image_keys(dataset: Any) -> Sequence[Any]:
    """The training images in dataset order: COCO image ids, or an image folder's file paths."""
    ids = getattr(dataset, "image_ids", None)
    if ids is None and hasattr(dataset, "samples"):
        ids = [path for path, _ in dataset.samples]
    if ids is None:
        ids = range(len(dataset))
    return ids.tolist() if hasattr(ids, "tolist") else list(ids)


def training_set_fingerprint(dataset: Any, annotation_file: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    """``{"images": count, "image_keys_sha1": hash of the image ids in order, "annotation_file",
    "annotation_sha1"}`` of a training dataset (the annotation entries only when a file is given)."""
    keys = _image_keys(dataset)
    fingerprint: dict[str, Any] = {
        "images": len(keys),
        "image_keys_sha1": hashlib.sha1("\n".join(map(str, keys)).encode()).hexdigest(),
    }
    if annotation_file is not None:
        fingerprint["annotation_file"] = str(annotation_file)
        fingerprint["annotation_sha1"] = _file_sha1(annotation_file)
    return fingerprint


def _describe(fingerprint: Mapping[str, Any]) -> str:
    text = f"{fingerprint.get('images')} images (ids {str(fingerprint.get('image_keys_sha1'))[:10]})"
    if "annotation_file" in fingerprint:
        text += f", {fingerprint['annotation_file']} (sha1 {str(fingerprint.get('annotation_sha1'))[:10]})"
    return text


def check_training_data(
    saved: Optional[Mapping[str, Any]], current: Mapping[str, Any], checkpoint: str | os.PathLike, allow: bool
) -> Optional[str]:
    """Compare the training set of a checkpoint with today's.

    Returns None when they match (or the checkpoint holds no fingerprint: written before fingerprints were
    stored), else the description of the change when ``allow`` (the caller restarts the data order).

    Raises:
        ConfigError: the training set changed and ``allow`` is false; the message names both sets and the
            two ways on.
    """
    if saved is None:
        return None
    compared = ("images", "image_keys_sha1", "annotation_sha1")
    if all(saved.get(key) == current.get(key) for key in compared if key in saved or key in current):
        return None
    change = f"the checkpoint {Path(checkpoint).name} was trained on {_describe(saved)}; now: {_describe(current)}"
    if allow:
        return change
    raise ConfigError(
        f"--resume {checkpoint}: the training set changed since the checkpoint ({change}). The saved data "
        "position would index a different image order. Resume with the training set the run used, or pass "
        "trainer.resume_with_changed_data=true to end the interrupted epoch there and continue with the new "
        "set's order from the next epoch"
    )
