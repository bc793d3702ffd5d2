"""EMA of the weights: checkpoints and evaluation carry the average (decay applied step by step), the raw
weights are kept beside it, and a resumed run continues the average exactly as the uninterrupted run."""

import shutil
from pathlib import Path

import pytest
import torch

from sasa_det.checkpoint_file import read_checkpoint_file
from sasa_det.engine.experiment import load_config
from sasa_det.engine.inference.loading import load_module
from sasa_det.engine.run.checkpoints import LastCheckpoint
from sasa_det.engine.runner import train
from tests.helpers import tiny_shapes_overrides

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shapes_demo.yaml"
DECAY = 0.5


def _config(shapes: Path, out: Path, max_steps: int, *extra: str):
    overrides = [
        *tiny_shapes_overrides(shapes, out, num_train=4, num_val=2),
        f"trainer.max_steps={max_steps}",
        "trainer.max_epochs=-1",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "eval.save_visualization=0",
        f"trainer.ema_decay={DECAY}",
        "trainer.ema_start_step=1",
        *extra,
    ]
    return load_config(DEMO_CONFIG, overrides), overrides


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 4-step run whose every last.ckpt is also kept as ``step<N>.ckpt``, and the same run resumed from
    its step-2 checkpoint: ``(checkpoints by step, resumed final checkpoint, its path)``."""
    root = tmp_path_factory.mktemp("ema")
    original_save = LastCheckpoint.save

    def save_and_keep(self, trainer):
        path = original_save(self, trainer)
        shutil.copyfile(path, path.with_name(f"step{trainer.global_step}.ckpt"))
        return path

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LastCheckpoint, "save", save_and_keep)
        cfg, _ = _config(root / "shapes", root / "full", 4, "trainer.checkpoint_every_n_steps=1")
        folder = Path(train(cfg)["last_checkpoint"]).parent
    by_step = {step: read_checkpoint_file(folder / f"step{step}.ckpt") for step in (2, 3, 4)}
    cfg, _ = _config(root / "shapes", root / "resumed", 4, "trainer.checkpoint_every_n_steps=1")
    resumed_path = train(cfg, resume_from=folder / "step2.ckpt")["last_checkpoint"]
    return by_step, read_checkpoint_file(resumed_path), resumed_path


def _float_keys(state):
    return [k for k, v in state.items() if v.is_floating_point() and "running_" not in k]


def test_checkpoint_holds_the_average_and_the_raw_weights(runs):
    by_step, _, _ = runs
    full, part = by_step[4], by_step[3]
    assert full["global_step"] == 4 and part["global_step"] == 3
    ema, raw = full["state_dict"], full["current_model_state"]
    differing = [k for k in _float_keys(ema) if not torch.equal(ema[k], raw[k])]
    assert len(differing) > len(_float_keys(ema)) // 2  # the average is not the raw weights
    # Step 4's update: ema_4 = decay * ema_3 + (1 - decay) * weights_4, with ema_3 from step 3's checkpoint.
    for key in _float_keys(ema):
        expected = DECAY * part["state_dict"][key] + (1 - DECAY) * raw[key]
        torch.testing.assert_close(ema[key], expected, rtol=1e-5, atol=1e-6, msg=key)


def test_resume_continues_the_average_bit_exactly(runs):
    by_step, resumed, _ = runs
    full = by_step[4]
    for state in ("state_dict", "current_model_state"):
        assert full[state].keys() == resumed[state].keys()
        for key, value in full[state].items():
            assert torch.equal(value, resumed[state][key]), f"{state}/{key}"


def test_loaded_module_evaluates_the_average(runs):
    by_step, _, path = runs
    full = by_step[4]
    module, _ = load_module(path)
    loaded = module.state_dict()
    for key in _float_keys(full["state_dict"]):
        assert torch.equal(loaded[key], full["state_dict"][key]), key
