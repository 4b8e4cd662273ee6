# The two commands of the README: `make train` and `make test`. Both create .venv on first
# use and reuse it afterwards (re-installing only when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hmarl-installed
ARGS ?=
# Test files run on this many pytest-xdist workers (--dist loadfile: a file's tests, and its
# module fixtures, stay on one worker); 0 runs them in this process, auto uses every core.
TEST_WORKERS ?= 2

.PHONY: setup train test lint docs bench bench-learning clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# Exact pin first: an unpinned torch would pull the newest CUDA build (gigabytes).
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev,slurm,optuna,ray,docs,mm]"
	touch $(STAMP)

setup: $(STAMP)

train: setup
	$(BIN)/python -m hmarl.train +experiment=asym_1_10 $(ARGS)

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

lint: setup
	$(BIN)/ruff check hmarl hydra_plugins tests scripts
	$(BIN)/ruff format --check hmarl hydra_plugins tests scripts
	$(BIN)/mypy

# The docs site into site/ (git-ignored); --strict: a broken link or a page outside the nav fails.
docs: setup
	$(BIN)/mkdocs build --strict --quiet

bench: setup
	$(BIN)/python scripts/bench_features.py
	$(BIN)/python scripts/bench_train.py

# Learning quality over seeds and markets (scripts/bench_learning.py); ARGS="--quick" for 3 seeds.
bench-learning: setup
	$(BIN)/python scripts/bench_learning.py $(ARGS)

clean:
	rm -rf $(VENV) .hmarl_cache outputs multirun site
