# Two commands set everything up on a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: demo test lint browser bench calibration reliability experiments notebook gpu-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU build, from local disk: a plain `torch` requirement could pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ensemble-stats demo --out demo-out

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the report's headless-browser test needs Debian's chromium; installed here when possible, else that test skips
browser:
	./scripts/install-chromium.sh

# two pytest workers: most of the suite waits on subprocesses, clusters and servers, so they overlap well
test: lint browser
	$(BIN)/python -m pytest -m "not slow" -q -n 2

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_collector.py
	$(BIN)/python benchmarks/bench_trainer.py
	$(BIN)/python benchmarks/bench_precision.py
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/bench_fit.py
	$(BIN)/python benchmarks/bench_ntk.py
	$(BIN)/python benchmarks/bench_calibration.py

# Monte-Carlo coverage of every interval (S = 4..32; independent/correlated grids; Gaussian/heavy-tailed/skewed)
calibration: $(STAMP)
	$(BIN)/python benchmarks/bench_calibration.py --replicates 2000

# every fault-injection test at full count (and the other slow suites); writes RELIABILITY.md from the results
reliability: $(STAMP)
	ENSEMBLE_STATS_RELIABILITY_OUT=RELIABILITY.md $(BIN)/python -m pytest -m "reliability or slow" -q

# the seed papers' studies re-run as ensembles (each under an hour on 2 cores): stores in experiments-out/,
# EXPERIMENTS.md and experiments/*.png from them; rerunning resumes the stores. SCALE=smoke|default|full, ARGS=...
SCALE ?= default
experiments: $(STAMP)
	$(BIN)/python examples/experiments/run.py --scale $(SCALE) --no-progress $(ARGS)

# examples/analysis.ipynb executed top to bottom on the demo's store and committed with its outputs
notebook: demo
	cd examples && ENSEMBLE_STORE=../demo-out/demo.zarr NOTEBOOK_FIGURE=../demo-out/variance.png \
		../$(BIN)/jupyter-execute --inplace analysis.ipynb

# the GPU path on one CUDA GPU (about 8 minutes, nothing downloaded): CUDA tests, the trainer bench on CUDA (with
# the one-pass kernel and TF32 at S = 1000, N = 4096), a paper-budget slice (10^5 steps), TF32's deviation from
# float64; PYTHON=... picks a Python whose torch has CUDA (see scripts/gpu-check.sh)
gpu-check:
	./scripts/gpu-check.sh

clean:
	rm -rf demo-out bench-out .pytest_cache .ruff_cache
