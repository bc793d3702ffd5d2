"""The GPU check's ``train_eval`` section: a short real training on a generated COCO-format set, then the
evaluation of its checkpoint, through the library functions that ``tools/train.py`` and ``tools/eval.py`` run.

The experiment config is the caller's (``settings["train_config"]``; ``tools/gpu_check.py`` gives the COCO
RetinaNet with a SASA-ResNet-50); the section overrides its data, sizes, steps and trainer for the check.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator
from pathlib import Path

__all__ = ["train_eval", "train_eval_overrides"]


def train_eval_overrides(settings: dict, data: dict, run_dir: Path, image: int, steps: int) -> list[str]:
    """Config overrides for the check's run: the generated ``data`` (paths from ``make_shapes_dataset``),
    ``image``-px inputs, ``steps`` steps on one device, bfloat16 AMP on a GPU; a narrow ResNet-26 with every
    kind of stage in a dry run, which keeps the CPU run to seconds."""
    dry = settings["dry_run"]
    on_cpu = settings["device"] == "cpu"
    overrides = [
        f"output_dir={run_dir}",
        f"data.train_images={data['train_images']}",
        f"data.train_ann={data['train_ann']}",
        f"data.val_images={data['val_images']}",
        f"data.val_ann={data['val_ann']}",
        "model.num_classes=3",
        f"data.min_sizes=[{image}]",
        f"data.max_size={image}",
        f"model.min_size={image}",
        f"model.max_size={image}",
        f"data.batch_size={2 if dry else 4}",
        f"data.val_batch_size={2 if dry else 4}",
        f"data.num_workers={0 if dry else 4}",
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.devices=1",
        "trainer.strategy=auto",
        "trainer.sync_batchnorm=false",
        f"trainer.accelerator={'cpu' if on_cpu else 'gpu'}",
        f"trainer.precision={'32-true' if on_cpu else 'bf16-mixed'}",
    ]
    if dry:
        overrides += [
            "model.backbone={name: resnet26, base_width: 8, stage_ops: [conv, sasa, sasa, aa]}",
            "model.fpn_channels=64",
        ]
    return overrides


def _failure(record: dict, started: float) -> dict:
    """``record`` marked failed, with the time spent and the end of the traceback being handled."""
    return {
        **record,
        "seconds": round(time.perf_counter() - started, 1),
        "ok": False,
        "error": traceback.format_exc()[-2000:],
    }


def train_eval(settings: dict) -> Iterator[dict]:
    """Train ``settings["train_config"]`` for a few steps with AMP on a generated COCO-format set, then evaluate
    its last checkpoint; one result line each. Without a config the section says so and trains nothing."""
    config = settings.get("train_config")
    if not config:
        yield {"step": "train", "skipped": "no experiment config given (train_config; tools/gpu_check.py gives one)"}
        return
    from sasa_det.data.shapes import make_shapes_dataset
    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.runner import evaluate, train

    dry = settings["dry_run"]
    out = Path(settings["out"])
    image, steps = (64, 2) if dry else (512, 20)
    data = make_shapes_dataset(
        out / "train_data", num_train=8 if dry else 80, num_val=4 if dry else 16, image_size=image
    )
    record = {"step": "train", "config": str(config), "steps": steps, "image": image}
    started = time.perf_counter()
    try:  # a failure is the check's finding: reported, and the section ends
        result = train(load_config(config, train_eval_overrides(settings, data, out / "train_run", image, steps)))
    except Exception:
        yield _failure(record, started)
        return
    metrics = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float))}
    yield {**record, "seconds": round(time.perf_counter() - started, 1), "ok": True, "metrics": metrics}
    record = {"step": "eval"}
    started = time.perf_counter()
    try:
        evaluation = evaluate(result["last_checkpoint"], output_dir=out / "eval_run")["metrics"]
    except Exception:
        yield _failure(record, started)
        return
    yield {
        **record,
        "seconds": round(time.perf_counter() - started, 1),
        "ok": True,
        "bbox_AP": evaluation.get("val/bbox/AP"),
        "bbox_AP50": evaluation.get("val/bbox/AP50"),
    }
