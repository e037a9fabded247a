# irstd — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the CPU build on machines without a GPU; pip picks the CUDA build where one is wanted
TORCH_VERSION ?= 2.13.0

.DEFAULT_GOAL := help
.PHONY: help install demo test test-slow lint bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv and install irstd (editable) with its test tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: install ## LESPS from point labels on the built-in synthetic data (CPU, ~2 min); extra overrides: ARGS="..."
	$(VENV)/bin/irstd-train experiment=demo $(ARGS)

test: install ## run the fast test suite
	$(PY) -m pytest

test-slow: install ## run the slow tests too
	$(PY) -m pytest -m "slow or not slow"

lint: install ## ruff over the code and the tests
	$(VENV)/bin/ruff check src tests scripts

bench: install ## time backbones, metrics and one LESPS round against references measured in the same run
	$(PY) scripts/bench_models.py
	$(PY) scripts/bench_metrics.py
	$(PY) scripts/bench_metrics.py --noise 0.55
	$(PY) scripts/bench_evolution.py

clean: ## remove caches (keeps .venv, data/ and outputs/)
	rm -rf .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -not -path "./$(VENV)/*" -exec rm -rf {} +
