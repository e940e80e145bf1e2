# `make test` and `make demo` work on a fresh clone: they build .venv first.
# Override the interpreter with `make test PYTHON=/path/to/python3.12`.
PYTHON ?= $(shell sh .ci/find-python)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all test test-fast lint format demo bench clean

all: test

$(STAMP): pyproject.toml setup.cfg
	@test -n "$(PYTHON)" || { echo "No Python >= 3.12 found; run 'make PYTHON=/path/to/python3.12 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

# Skips the long statistical checks (they still run in CI through `make test`).
test-fast: lint
	$(BIN)/python -m pytest -m "not slow"

demo: $(STAMP)
	$(BIN)/ase-rare demo

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
