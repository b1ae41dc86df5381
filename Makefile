# tailorshot — every target does its own set-up (venv + pip install) on a fresh machine.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: help install demo test test-fast lint format bench clean

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/ —/'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)  ## Create the venv and install tailorshot with its dev extras.

demo: $(STAMP)  ## Build the demo world into ./var (idempotent) and serve it on $(HOST):$(PORT).
	HF_HUB_OFFLINE=1 TAILORSHOT_API__HOST=$(HOST) TAILORSHOT_API__PORT=$(PORT) $(VENV)/bin/tailorshot demo

lint: $(STAMP)  ## ruff (lint + format check), mypy and the layer contracts (import-linter, .importlinter).
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy data recsys genservice api
	$(VENV)/bin/lint-imports

format: $(STAMP)  ## Apply ruff fixes and formatting.
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

TEST_WORKERS ?= 2

test: $(STAMP) lint  ## Lint, then the whole test suite on $(TEST_WORKERS) processes (offline; PostgreSQL tests skip if it is absent).
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)  ## The test suite without lint and without browser tests.
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile -m "not browser"

bench: $(STAMP)  ## Run the CPU benchmarks (minutes; prints JSON figures).
	@command -v wrk >/dev/null 2>&1 || (apt-get install -y -qq wrk >/dev/null 2>&1) \
		|| echo "warning: wrk not installed; bench_hero.py --wrk uses the Python load generator"
	@for b in bench/bench_*.py; do echo "== $$b"; HF_HUB_OFFLINE=1 $(PY) $$b || exit 1; done
	HF_HUB_OFFLINE=1 $(PY) bench/bench_hero.py --wrk

clean:  ## Remove the venv and caches (keeps ./var).
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
