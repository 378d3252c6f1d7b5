# csstz: every target sets up .venv from nothing (pip + constraints.txt) and runs.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
THREADS ?= 2

.PHONY: venv lint test test-slow test-sps demo demo-full bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch must come in the same pip command as lightning (else a CUDA torch is pulled)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0 -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

# ruff (pinned in constraints.txt; config in pyproject.toml): lint, annotations (ANN) and format
LINT_PATHS := src tests benchmarks scripts

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

# lint first, so that CI's `make test` checks it
test: lint
	OMP_NUM_THREADS=$(THREADS) $(BIN)/python -m pytest -q -ra

test-slow: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(BIN)/python -m pytest -q -ra -m slow

# the SPS population: installs the optional extra csstz[sps] (bagpipes, GPL-3, ~250 MB of grids)
test-sps: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ".[sps]"
	OMP_NUM_THREADS=$(THREADS) $(BIN)/python -m pytest -q -ra -m sps

demo: $(STAMP)
	$(BIN)/csstz demo --quick --out demo_out

demo-full: $(STAMP)
	$(BIN)/csstz demo --out demo_full

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_simulate.py

clean:
	rm -rf $(VENV) demo_out demo_full .pytest_cache
