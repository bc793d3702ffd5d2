"""Predicting over a video file or a camera: an annotated video and a per-frame JSON, frames in batches.

Frames are read and written with PyAV (FFmpeg's libraries; the ``video`` extra). A camera is opened by index:
``/dev/video<i>`` through v4l2 on Linux, the ``avfoundation`` device ``<i>`` on macOS. Frames go through the
:class:`~sasa_det.engine.inference.predictor.Predictor` ``batch_size`` at a time; each is drawn with its detections and
encoded into ``<name>_detections.mp4`` (H.264, the source's frame rate; frames whose longer side is under
:data:`~sasa_det.evaluation.visualize.MIN_DRAWN_SIDE` are drawn enlarged by a whole factor, as images are, so their
labels are as legible), and its detections, in the source's pixels, are collected into ``<name>_detections.json``::

    {"source": ..., "fps": 25.0, "width": W, "height": H, "class_names": [...], "score_threshold": 0.5,
     "frames": [{"frame": 0, "time": 0.0, "boxes": [[x1, y1, x2, y2], ...], "scores": [...],
                 "labels": [...], "class_names": [...]}, ...]}

A camera runs until ``max_frames`` frames or Ctrl-C; what was read until then is written.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from sasa_det.optional_extra import require_extra

__all__ = ["VIDEO_SUFFIXES", "VideoReport", "camera_source", "is_video", "predict_video", "video_inputs"]

logger = logging.getLogger(__name__)

#: File suffixes taken as videos by ``tools/predict.py``.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video file by its suffix (:data:`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def camera_source(index: int) -> tuple[str, str]:
    """``(device, FFmpeg input format)`` of camera ``index`` on this system."""
    if platform.system() == "Darwin":
        return str(index), "avfoundation"
    if platform.system() == "Windows":
        raise ValueError("camera input is supported on Linux (v4l2) and macOS (avfoundation); give a video file")
    return f"/dev/video{index}", "v4l2"


@dataclass
class VideoReport:
    """What :func:`predict_video` wrote: the annotated video, the per-frame JSON and the frame count."""

    video: Path
    detections_json: Path
    frames: int
    fps: float


def _open(source: str | os.PathLike | int):
    """The PyAV container of a video file or a camera index; errors name the source and the fix."""
    av = require_extra("av", "video", "Video prediction")
    if isinstance(source, int):
        device, fmt = camera_source(source)
        try:
            return av.open(device, format=fmt), f"camera {source} ({device})"
        except (OSError, av.FFmpegError) as err:
            raise FileNotFoundError(f"camera {source} ({device}) cannot be opened: {err}; check --camera") from err
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        container = av.open(str(path))
    except (OSError, av.FFmpegError) as err:
        raise ValueError(f"video {path} cannot be read by FFmpeg: {err}") from err
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path} holds no video stream")
    return container, str(path)


def _frames(container, max_frames: Optional[int]) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(index, time in seconds, RGB uint8 [H, W, 3])`` of the container's first video stream."""
    stream = container.streams.video[0]
    for index, frame in enumerate(container.decode(stream)):
        if max_frames is not None and index >= max_frames:
            return
        time = float(frame.time) if frame.time is not None else float("nan")
        yield index, time, frame.to_ndarray(format="rgb24")


def _batches(frames: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in frames:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _frame_record(index: int, time: float, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "frame": index,
        "time": None if time != time else round(time, 6),
        "boxes": [[round(float(v), 2) for v in box] for box in result["boxes"].tolist()],
        "scores": [round(float(s), 4) for s in result["scores"].tolist()],
        "labels": [int(v) for v in result["labels"].tolist()],
        "class_names": list(result["class_names"]),
    }


def predict_video(
    predictor,
    source: str | os.PathLike | int,
    out_dir: str | os.PathLike,
    batch_size: int = 4,
    max_frames: Optional[int] = None,
    progress: bool = True,
) -> VideoReport:
    """Run ``predictor`` (a :class:`~sasa_det.engine.inference.predictor.Predictor`) over every frame of ``source`` (a
    video file, or a camera index) and write ``<name>_detections.mp4`` and ``<name>_detections.json`` into
    ``out_dir`` (``name``: the file's stem, or ``camera<i>``).

    Raises MissingExtra without the ``video`` extra, FileNotFoundError / ValueError naming an unreadable source,
    before any frame is predicted.
    """
    av = require_extra("av", "video", "Video prediction")
    from tqdm import tqdm

    from sasa_det.evaluation.visualize import draw_detections

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    container, described = _open(source)
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    total = stream.frames or None
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames
    name = f"camera{source}" if isinstance(source, int) else Path(source).stem
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    video_path, json_path = out_dir / f"{name}_detections.mp4", out_dir / f"{name}_detections.json"
    output = av.open(str(video_path), mode="w")
    encoder = None
    records: list[dict[str, Any]] = []
    width = height = 0
    bar = tqdm(total=total, desc=f"predict {name}", unit="frame", disable=not progress)
    try:
        for batch in _batches(_frames(container, max_frames), batch_size):
            images = [torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0 for _, _, rgb in batch]
            results = predictor.predict_tensors(images)
            for (index, time, rgb), image, result in zip(batch, images, results):
                drawn = draw_detections(image, result, predictor.class_names, predictor.score_threshold)
                if encoder is None:
                    height, width = rgb.shape[:2]
                    encoder = output.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=rate)
                    drawn_height, drawn_width = drawn.shape[1:]  # small frames are drawn enlarged, as images are
                    encoder.width, encoder.height = drawn_width - drawn_width % 2, drawn_height - drawn_height % 2
                    encoder.pix_fmt = "yuv420p"
                array = np.ascontiguousarray(drawn.permute(1, 2, 0).numpy()[: encoder.height, : encoder.width])
                for packet in encoder.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                    output.mux(packet)
                records.append(_frame_record(index, time, result))
            bar.update(len(batch))
    except KeyboardInterrupt:
        logger.warning("stopped after %d frame(s); writing what was read", len(records))
    finally:
        bar.close()
        container.close()
        if encoder is not None:
            for packet in encoder.encode():
                output.mux(packet)
        output.close()
    if not records:
        video_path.unlink(missing_ok=True)
        raise ValueError(f"{described} gave no frame")
    json_path.write_text(
        json.dumps(
            {
                "source": described,
                "fps": float(rate),
                "width": width,
                "height": height,
                "class_names": list(predictor.class_names),
                "score_threshold": predictor.score_threshold,
                "frames": records,
            }
        )
    )
    return VideoReport(video_path, json_path, len(records), float(rate))


def video_inputs(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(videos, others)``: the inputs that name video files, and the rest (images, folders, globs)."""
    videos = [item for item in inputs if is_video(item)]
    return videos, [item for item in inputs if not is_video(item)]
