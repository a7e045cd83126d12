# The two commands a fresh clone needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= examples/quickstart.yaml

.PHONY: run test lint typecheck install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml tiers/classifier/_lean.c | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml tiers/classifier/_lean.c | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(BIN)/tiergate serve --config $(CONFIG)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check gateway tiers routing budgets tests benchmarks
	$(BIN)/ruff format --check gateway tiers routing budgets tests benchmarks

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy gateway tiers routing budgets

test: lint typecheck
	$(BIN)/pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) build *.egg-info tiers/classifier/*.so
