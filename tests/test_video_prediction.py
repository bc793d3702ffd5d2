"""Video prediction: tools/predict.py on a video file writes an annotated video with every frame and a per-frame
JSON whose detections are the Predictor's on each decoded frame (frames batched 3 at a time); bad input is named
before the model loads; a missing extra is named."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.helpers import load_tool

FRAMES = 7  # batches of 3: 3 + 3 + 1


def _write_video(path: Path, images: list[np.ndarray]) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in images:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_video_gives_annotated_video_and_per_frame_json(tiny_detection_run, tmp_path):
    from PIL import Image

    from sasa_det.engine.inference.predictor import Predictor
    from sasa_det.evaluation.visualize import draw_detections

    val = sorted((Path(tiny_detection_run["output_dir"]).parent / "shapes" / "val").glob("*.png"))
    images = [np.asarray(Image.open(val[i % len(val)]).convert("RGB")) for i in range(FRAMES)]
    video = tmp_path / "clip.mp4"
    _write_video(video, images)
    checkpoint = tiny_detection_run["last_checkpoint"]
    argv = [checkpoint, str(video), "--out", str(tmp_path / "out"), "--batch-size", "3", "--score-threshold", "0.01"]
    load_tool("predict").main(argv)

    record = json.loads((tmp_path / "out" / "clip_detections.json").read_text())
    assert [f["frame"] for f in record["frames"]] == list(range(FRAMES))
    assert record["fps"] == 5.0 and (record["width"], record["height"]) == (64, 64)
    drawn = _decoded(tmp_path / "out" / "clip_detections.mp4")
    # a small video is drawn enlarged as a small image is, so its labels are as legible
    assert len(drawn) == FRAMES and drawn[0].shape == (64 * 8, 64 * 8, 3)
    # the detections of each frame are the Predictor's on that decoded frame, one frame at a time
    predictor = Predictor(checkpoint, score_threshold=0.01)
    frames = _decoded(video)
    assert sum(len(f["boxes"]) for f in record["frames"]) > 0
    for frame, entry in zip(frames, record["frames"]):
        result = predictor(frame)
        assert entry["labels"] == result["labels"].tolist()
        torch.testing.assert_close(torch.tensor(entry["boxes"]).reshape(-1, 4), result["boxes"], atol=0.01, rtol=0)
        torch.testing.assert_close(torch.tensor(entry["scores"]), result["scores"], atol=1e-4, rtol=0)
    # each annotated frame is the image drawing of that frame's detections (up to the codec's loss)
    image = torch.from_numpy(frames[0]).permute(2, 0, 1)
    expected = draw_detections(image, predictor(frames[0]), predictor.class_names, 0.01).permute(1, 2, 0).numpy()
    assert np.abs(drawn[0].astype(float) - expected).mean() < 8


def test_missing_video_is_named_before_the_model_loads(tmp_path):
    argv = [str(tmp_path / "no.ckpt"), str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match=r"video file\(s\) not found: .*missing\.mp4"):
        load_tool("predict").main(argv)


def test_missing_video_extra_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "av", None)  # import fails as if not installed
    argv = [str(tmp_path / "no.ckpt"), "--camera", "0", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stop:
        load_tool("predict").main(argv)
    assert stop.value.code == 2
    assert "sasa-det[video]" in capsys.readouterr().err
