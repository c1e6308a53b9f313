# srpo-bench: every target installs what it needs (`setup`) first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup test test-slow smoke repro bench clean help

help:
	@echo "make setup      create $(VENV): torch==2.13.0 (CPU wheel) first, then the project with dev extras"
	@echo "make test       default test suite (under 10 minutes on 2 CPU cores)"
	@echo "make test-slow  the slow tests (learned-score bandit accuracy on every shape, real SIGKILL resume)"
	@echo "make smoke      seconds-scale end-to-end run"
	@echo "make repro      regenerate every published result"
	@echo "make bench      training-throughput benchmark -> reports/bench/train_throughput.json"

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

smoke: setup
	@echo "The DVC smoke pipeline (datasets -> ... -> report) is not yet available;"
	@echo "running the single-run smoke check: srpo train --task bandit-ring8 --profile smoke"
	$(VENV)/bin/srpo train --task bandit-ring8 --profile smoke --seed 0 --out runs/smoke/bandit-ring8

repro: setup
	@echo "make repro: the DVC pipeline (dvc.yaml, params.yaml, reports/report.md) is not yet available."
	@echo "Today: 'make test', 'make smoke', 'make bench' and 'srpo train --help'."

bench: setup
	$(PY) benchmarks/train_throughput.py --out reports/bench/train_throughput.json

clean:
	rm -rf runs .pytest_cache .hypothesis
