# Two entry points for a fresh clone (Python >= 3.10 and pip are all that is needed):
#   make demo   - train + evaluate an attention RetinaNet on the embedded synthetic shapes dataset (CPU)
#   make test   - check the code with ruff (lint, format), then run the test suite
# Both install what they use themselves with uv and the committed uv.lock. uv is used (not pip) because it
# resolves exactly the locked versions from the package index, ignoring any local pip configuration.
# What each installs:
#   make demo         the package and its required dependencies only: no extras, no test tools
#   make test, setup  also the `test` group (pytest, ruff) and every extra (the suite tests them)
#   make extras EXTRAS="onnx video"   adds extras to the environment, keeping what is installed
# (extras: plots, onnx, video, wandb, mlflow; pyproject.toml says what each is for)

# Use uv from PATH when present, else bootstrap a pinned uv into .tools/ with the system python.
UV_VERSION := 0.13.8
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
PYTHON ?= python3
# `uv run` syncs before running without removing anything (inexact): the demo's run keeps what tests installed
RUN := $(UV) run --locked --all-extras
RUN_DEMO := $(UV) run --locked --no-dev
EXTRAS ?=

.PHONY: demo test test-all setup setup-demo extras lock benchmark model-info clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

setup: $(UV)
	$(UV) sync --locked --all-extras

# --inexact: after `make test` the test tools and extras stay (nothing is uninstalled and reinstalled)
setup-demo: $(UV)
	$(UV) sync --locked --no-dev --inexact

extras: $(UV)
	$(if $(strip $(EXTRAS)),,$(error give the extras to add, e.g. make extras EXTRAS="onnx video"))
	$(UV) sync --locked --no-dev --inexact $(addprefix --extra ,$(EXTRAS))

# One intra-op thread unless OMP_NUM_THREADS says otherwise: the demo's data loader takes the other core of a
# small machine, and when cores are shared (a second training, other jobs) threads that wait on each other cost
# far more than a second thread gains (demo training step, 2-core VM shared with other jobs: 1 thread 212 ms,
# 2 threads 2858 ms).
demo: setup-demo
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(RUN_DEMO) python tools/train.py configs/shapes_demo.yaml

# Lint and format checks first (ruff, configured in pyproject.toml), then the default suite on every core
# (pytest-xdist: one worker per logical core, each single-threaded; a worker that finishes early takes queued
# tests from the others). `pytest` alone runs in one process.
test: setup
	$(RUN) ruff check
	$(RUN) ruff format --check
	$(RUN) pytest -n logical --dist worksteal

# Also runs the tests marked slow.
test-all: setup
	$(RUN) pytest -m "" -n logical --dist worksteal

benchmark: setup-demo
	$(RUN_DEMO) python tools/benchmark.py layers

model-info: setup-demo
	$(RUN_DEMO) python tools/model_info.py --all

lock: $(UV)
	$(UV) lock

clean:
	rm -rf .venv .tools outputs .pytest_cache
