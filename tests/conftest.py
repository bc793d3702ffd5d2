"""Test-session settings shared by every test file.

The suite runs many tiny models on small CPUs (CI has 2 cores). Several intra-op threads on such tensors
mostly spin-wait on each other, and when processes share the cores (DDP tests start two) a step can take
seconds instead of milliseconds. One thread per process keeps the suite fast and its timing predictable;
subprocesses inherit it through OMP_NUM_THREADS.
"""

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
# The data modules cache image checks; the tests keep that cache out of the user's home.
os.environ.setdefault("SASA_DET_CACHE_DIR", tempfile.mkdtemp(prefix="sasa_det_test_cache_"))
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from sasa_det.layers import register_local_attention_impl  # noqa: E402
from sasa_det.layers.reference import local_attention_reference  # noqa: E402

# The slow dense reference is a test oracle, not a production path: the tests register it themselves so
# that layers can be run through it with impl="reference".
register_local_attention_impl("reference", local_attention_reference)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_detection_run(tmp_path_factory):
    """One seconds-long training run of the demo config on a 64-px shapes set, shared by the tests of what
    users do with a trained run (predicting, analysing, attention maps): its ``train()`` result."""
    from pathlib import Path

    from sasa_det.engine.experiment import load_config
    from sasa_det.engine.runner import train
    from tests.helpers import tiny_shapes_overrides

    root = tmp_path_factory.mktemp("tiny_run")
    demo = Path(__file__).resolve().parents[1] / "configs" / "shapes_demo.yaml"
    overrides = tiny_shapes_overrides(root / "shapes", root / "run", num_train=8, num_val=4)
    cfg = load_config(
        demo, [*overrides, "trainer.max_steps=4", "trainer.log_every_n_steps=1", "trainer.accelerator=cpu"]
    )
    return train(cfg)
