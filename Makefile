# srpo-bench: every target installs what it needs (`setup`) first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# `make test` workers (pytest-xdist, whole test files per worker, 1 torch thread each).
TEST_WORKERS ?= 2
# DVC stages call `python`: put the venv first on PATH.
DVC    := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc

.PHONY: setup lint test test-slow smoke repro data-policies bench bench-datasets bench-ray clean help

help:
	@echo "make setup      create $(VENV): torch==2.13.0 (CPU wheel) first, then the project with dev extras"
	@echo "make lint       import layers (lint-imports, contracts in pyproject.toml), ruff check, ruff format --check"
	@echo "make test       lint, then the default test suite in $(TEST_WORKERS) processes (under 8 minutes on 2 CPU cores)"
	@echo "make test-slow  the slow tests (learned-score bandit accuracy on every shape, real SIGKILL resume)"
	@echo "make smoke      the whole DVC pipeline, smoke profile (minutes) -> reports/smoke/report.md"
	@echo "make repro      the whole DVC pipeline, default profile (about 2 h 40 min on 2 cores) -> reports/report.md"
	@echo "                JOBS=N (smoke, repro): independent stages in parallel on a local Ray instance of N CPUs;"
	@echo "                with RAY_ADDRESS=HOST:PORT too: on that Ray cluster instead"
	@echo "make data-policies  train the data-generating SAC policies (hours; resumable) -> data_policies/<env>/"
	@echo "make bench-ray  smoke pipeline sequential vs Ray (JOBS=2) -> reports/bench/ray_smoke.json; paper protocol on 1/4/8 GPUs projected"
	@echo "make bench      benchmarks -> reports/bench/*.json (training throughput, action-sampling latency; dataset generation: make bench-datasets)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

# Layers first (srpo < srpo_bench.eval < srpo_bench.validation < pipeline, report, CLI), then style.
lint: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# JOBS=N: the stages on a local Ray instance of N CPUs, independent ones in parallel, the same
# dvc.lock at the end. RAY_ADDRESS=HOST:6379 (or in the environment): on that running Ray cluster.
RUN_RAY := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m srpo_bench.pipeline run --executor ray
RAY_ARGS := $(if $(RAY_ADDRESS),--address $(RAY_ADDRESS),--jobs $(JOBS))
USE_RAY := $(JOBS)$(RAY_ADDRESS)

smoke: setup
	$(if $(USE_RAY),$(RUN_RAY) $(RAY_ARGS) --dvc-file,$(DVC) repro) pipelines/smoke/dvc.yaml

repro: setup
	$(if $(USE_RAY),$(RUN_RAY) $(RAY_ARGS) --dvc-file,$(DVC) repro) dvc.yaml

# Hours on 2 cores; a killed run resumes (checkpoints in data_policies.work_dir). Reruns an
# environment only when eval/sac.py, eval/data_policies.py or pipelines/data_policies/params.yaml change.
data-policies: setup
	$(DVC) repro pipelines/data_policies/dvc.yaml

bench: setup
	$(PY) benchmarks/train_throughput.py --out reports/bench/train_throughput.json
	$(PY) benchmarks/train_throughput.py --profile default --seeds 1 3 --compiled-seeds \
		--out reports/bench/train_throughput_default_profile.json
	$(PY) benchmarks/sampling.py --out reports/bench/sampling.json

# The smoke profile sequential vs on Ray (each stage 1 thread; about 15 min on 2 cores), and the
# paper protocol projected on 1/4/8 GPUs from the measured H100 stage times (seconds).
bench-ray: setup
	$(PY) benchmarks/ray_smoke.py --jobs $(or $(JOBS),2) --out reports/bench/ray_smoke.json
	$(PY) benchmarks/ray_projection.py --out reports/bench/ray_projection.json

bench-datasets: setup
	$(PY) benchmarks/sac_compare.py --env hopper --steps 60000 --out reports/bench/sac_compare.json
	$(PY) benchmarks/datasets.py --policies data_policies --profile default --out reports/bench/datasets.json

clean:
	rm -rf runs .pytest_cache .hypothesis
