"""Test-session settings shared by every test file.

The suite runs many tiny models on small CPUs (CI has 2 cores). Several intra-op threads on such tensors
mostly spin-wait on each other, and when processes share the cores (DDP tests start two) a step can take
seconds instead of milliseconds. One thread per process keeps the suite fast and its timing predictable;
subprocesses inherit it through OMP_NUM_THREADS.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
