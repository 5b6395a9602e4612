# fastrefund: `make demo` runs the main job, `make test` runs the tests; both install first.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_SERVE ?= 1

.PHONY: help install postgres test test-fast lint demo bench fuzz clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev and spark extras (idempotent)

# The PostgreSQL tests start a throwaway cluster with Debian's binaries (tests/pg.py).
postgres: ## Install PostgreSQL 15 (Debian's postgresql package) when missing; no server is started
	@test -x /usr/lib/postgresql/15/bin/initdb || command -v initdb >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

test: $(STAMP) postgres ## Run the whole test suite
	$(PY) -m pytest

test-fast: $(STAMP) postgres ## Run the tests that do not train models or start servers
	$(PY) -m pytest -m "not slow"

lint: $(STAMP) ## ruff (lint + format check) and mypy on the packages
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

demo: $(STAMP) ## Simulate, retrain, materialize, serve and show real decisions (DEMO_SERVE=0: no serving)
	$(PY) scripts/demo.py --serve $(DEMO_SERVE)

bench: $(STAMP) ## Run every benchmark in benchmarks/ (figures go to docs/benchmarks.md by hand)
	@command -v wrk >/dev/null && command -v valgrind >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq wrk valgrind)
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

fuzz: $(STAMP) ## schemathesis, every phase and check, 100 examples an operation (docs/reliability.md)
	$(PY) benchmarks/fuzz.py --examples 100

# Only what is generated and made again by `make install` / `make demo`. Never the registry
# (mlflow.db, mlruns/), the online store or the audit log (data/*.db), nor any other folder of
# data/: a cron retrain keeps its live log and registry there (README), and the demo shares
# those defaults with it.
clean: ## Remove the venv, caches and the demo's simulated log data/demo (keeps mlflow.db, mlruns/, data/*.db)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info data/demo
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
