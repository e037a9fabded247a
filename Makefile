# irstd — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the CPU build on machines without a GPU; pip picks the CUDA build where one is wanted
TORCH_VERSION ?= 2.13.0
# make reproduce-*: conf/scale/$(SCALE).yaml, seeds 0..SEEDS-1 of every experiment
SCALE ?= smoke
SEEDS ?= 1
# make reproduce-single: cpu unless SCALE is given (make reproduce-single SCALE=gpu|smoke)
SINGLE_SCALE = $(if $(filter file,$(origin SCALE)),cpu,$(SCALE))
# make reproduce-classic / study-degeneration: the SIRST folder (default: data/SIRST) and a comma-separated subset of detectors
SIRST ?=
DETECTORS ?=
# make study-degeneration SIRST=DIR: Fig. 2 on it, and Fig. 5 (plus the shape study) on its target-free crops
STUDY_ON_SIRST = dataset.root=$(SIRST) factors.shape.root=$(SIRST) factors.background_root=$(SIRST) \
	factors.run=[intensity,size,position,count,shape]

.DEFAULT_GOAL := help
.PHONY: help install demo test test-slow docs lint bench gpu-check clean reproduce reproduce-table1 reproduce-table2 reproduce-table3 reproduce-fig6 reproduce-classic reproduce-single study-degeneration

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-19s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv and install irstd (editable) with its test tools

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev,export,docs]"
	touch $@

demo: install ## the default method from point labels beside full supervision, built-in synthetic data (CPU); ARGS="..."
	$(VENV)/bin/irstd-reproduce single --scale demo --rows full,clustering_fixed $(ARGS)

test: install ## run the fast test suite
	$(PY) -m pytest

test-slow: install ## run the slow tests too
	$(PY) -m pytest -m "slow or not slow"

# NO_MKDOCS_2_WARNING: mkdocs-material prints an end-of-life banner on every build; it is no build warning
docs: install ## build the docs site (strict)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: install ## ruff over the code and the tests
	$(VENV)/bin/ruff check src tests scripts

bench: install ## time backbones, metrics, label rounds and round-0 initialisers, full vs tiled inference, vmapped study training and training epochs against references in the same run
	# batch 4: the largest at which all thirteen backbones train within 8 GB on a CPU (docs/benchmarks.md)
	$(PY) scripts/bench_models.py --batch 4
	$(PY) scripts/bench_metrics.py
	$(PY) scripts/bench_metrics.py --noise 0.55
	$(PY) scripts/bench_evolution.py
	$(PY) scripts/bench_label_init.py
	$(PY) scripts/bench_label_update.py
	$(PY) scripts/bench_predict.py
	$(PY) scripts/bench_degeneration.py
	$(PY) scripts/bench_train.py

gpu-check: install ## the checks that need a GPU in one table (CUDA = CPU labeller and LESPS round, bf16, DDP, GPU benchmarks; SKIPPED without one); ARGS="--data-root DIR"
	PY=$(PY) scripts/gpu_check.sh $(ARGS)

reproduce: reproduce-table1 reproduce-table2 reproduce-table3 reproduce-fig6 ## tables 1-3 and Fig. 6; SCALE=smoke (default) or paper, SEEDS=N, ARGS="..."

reproduce-table1: install ## Table 1: DNA-Net w/ and w/o LESPS from centroid/coarse points, and full supervision
	$(VENV)/bin/irstd-reproduce table1 --scale $(SCALE) --seeds $(SEEDS) $(ARGS)

reproduce-table2: install ## Table 2: ACM, ALCNet, DNA-Net x full / centroid+ / coarse+ (SCALE=smoke: CPU, ~2 min)
	$(VENV)/bin/irstd-reproduce table2 --scale $(SCALE) --seeds $(SEEDS) $(ARGS)

reproduce-table3: install ## Table 3: DNA-Net on fixed pseudo labels (thresholds, RLCM, TLLCM, MSLCM, MSPCM) vs LESPS
	$(VENV)/bin/irstd-reproduce table3 --scale $(SCALE) --seeds $(SEEDS) $(ARGS)

reproduce-fig6: install ## Fig. 6: LESPS's Tloss, Tb, k and f swept with DNA-Net from centroid points
	$(VENV)/bin/irstd-reproduce fig6 --scale $(SCALE) --seeds $(SEEDS) $(ARGS)

reproduce-single: install ## point supervision beside full supervision on SIRST alone; SCALE=cpu (default here; ~15 min a run on 2 cores) | gpu | smoke, SEEDS=N, ARGS="--backbones acm --rows full,diffusion_fixed"
	$(VENV)/bin/irstd-reproduce single --scale $(SINGLE_SCALE) --seeds $(SEEDS) $(ARGS)

reproduce-classic: install ## Table 2's training-free methods on SIRST (SIRST=DIR, DETECTORS=a,b; no training, no SCALE)
	$(VENV)/bin/irstd-reproduce classic $(if $(SIRST),--data-root $(SIRST)) $(if $(DETECTORS),--detectors $(DETECTORS)) $(ARGS)

study-degeneration: install ## the mapping-degeneration study: Fig. 2 on SIRST (SIRST=DIR) and Fig. 5's factors; SCALE=smoke (CPU) or paper (GPU)
	$(VENV)/bin/irstd-degeneration $(if $(filter paper,$(SCALE)),scale=study_paper) $(if $(SIRST),$(STUDY_ON_SIRST)) $(ARGS)

clean: ## remove caches (keeps .venv, data/ and outputs/)
	rm -rf .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -not -path "./$(VENV)/*" -exec rm -rf {} +
