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
