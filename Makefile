# Two entry points for a fresh clone (Python >= 3.10 and pip are all that is needed):
#   make demo   - train + evaluate an attention RetinaNet on the embedded synthetic shapes dataset (CPU)
#   make test   - check the code with ruff (lint, format), then run the test suite
# Both install everything themselves with uv and the committed uv.lock. uv is used (not pip) because it
# resolves exactly the locked versions from the package index, ignoring any local pip configuration.

# Use uv from PATH when present, else bootstrap a pinned uv into .tools/ with the system python.
UV_VERSION := 0.13.8
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
PYTHON ?= python3
RUN := $(UV) run --locked

.PHONY: demo test test-all setup lock benchmark model-info clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

setup: $(UV)
	$(UV) sync --locked

# One intra-op thread unless OMP_NUM_THREADS says otherwise: the demo's data loader takes the other core of a
# small machine, and when cores are shared (a second training, other jobs) threads that wait on each other cost
# far more than a second thread gains (demo training step, 2-core VM shared with other jobs: 1 thread 212 ms,
# 2 threads 2858 ms).
demo: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(RUN) python tools/train.py configs/shapes_demo.yaml

# Lint and format checks first (ruff, configured in pyproject.toml), then the default suite.
test: setup
	$(RUN) ruff check
	$(RUN) ruff format --check
	$(RUN) pytest

# Also runs the tests marked slow.
test-all: setup
	$(RUN) pytest -m ""

benchmark: setup
	$(RUN) python tools/benchmark.py layers

model-info: setup
	$(RUN) python tools/model_info.py --all

lock: $(UV)
	$(UV) lock

clean:
	rm -rf .venv .tools outputs .pytest_cache
