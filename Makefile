# chroma-orch: `make serve` runs the service on the embedded defaults; `make test` passes the tests;
# `make test-fast` runs ruff and the unit and db tiers only (README: Development).
# The first supported interpreter (CPython 3.11-3.14) among python3, python3.14 ... python3.11,
# unless PYTHON is given; `make` says which it chose.
SUPPORTED_PYTHON := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 14))
PYTHON ?= $(firstword $(foreach p,python3 python3.14 python3.13 python3.12 python3.11,$(if $(shell command -v $(p) >/dev/null 2>&1 && $(p) -c '$(SUPPORTED_PYTHON)' 2>/dev/null && echo ok),$(p))))
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# A second Chroma version, in a venv of its own, for the local runtime's version tests and
# bench/upgrade.py: the bindings launcher needs chromadb's Rust bindings only, none of
# its Python dependencies (measured: built in ~5 s from pip's cache, 90 MB).
SECOND_CHROMA := 1.5.8
SECOND_CHROMA_STAMP := .venvs/chroma-$(SECOND_CHROMA)/.installed-stamp

.PHONY: serve test test-fast lint typecheck pytest bench clean chroma-venvs

# Python caches compiled modules, and pytest its rewritten test modules, in __pycache__;
# an environment that says not to (PYTHONDONTWRITEBYTECODE, as some containers set) makes
# every run, and every xdist worker, compile the package and ~200 test modules again:
# measured, collecting the unit and db tiers took 5.2 s that way against 2.5 s cached.
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): pyproject.toml setup.py
	@test -n "$(PYTHON)" || { echo "chroma-orch needs CPython 3.11-3.14: none of python3, python3.14, python3.13, python3.12, python3.11 is one (set PYTHON=...)" >&2; exit 1; }
	@$(PYTHON) -c '$(SUPPORTED_PYTHON)' || { echo "chroma-orch needs CPython 3.11-3.14; $(PYTHON) is $$($(PYTHON) -V 2>&1)" >&2; exit 1; }
	@echo "using $(PYTHON) ($$($(PYTHON) -V 2>&1)) for $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[local,dev]'
	touch $(STAMP)

$(SECOND_CHROMA_STAMP):
	@test -n "$(PYTHON)" || { echo "chroma-orch needs CPython 3.11-3.14 (set PYTHON=...)" >&2; exit 1; }
	test -x .venvs/chroma-$(SECOND_CHROMA)/bin/python || $(PYTHON) -m venv .venvs/chroma-$(SECOND_CHROMA)
	.venvs/chroma-$(SECOND_CHROMA)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps 'chromadb==$(SECOND_CHROMA)'
	.venvs/chroma-$(SECOND_CHROMA)/bin/python -I -c 'import chromadb_rust_bindings'
	touch $@

chroma-venvs: $(SECOND_CHROMA_STAMP)

serve: $(STAMP)
	$(BIN)/chroma-orch serve

lint: $(STAMP)
	$(BIN)/ruff check src migrations tests bench setup.py
	$(BIN)/ruff format --check src migrations tests bench setup.py
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# --durations: the slowest tests close every run's log, so a slower suite says where.
# tests/ecs (ECS on moto, 133 tests) runs on one xdist worker per CPU: its tests mostly
# wait, out the AWS delays tests/ecs models and the 10 s address quarantine before each
# stop of a running task, with half the CPU idle. Measured on 2 cores: 15 min serially,
# 6.5 min on two workers, the slowest tests' durations unchanged (67 s -> 68 s). The
# rest runs serially, as its timing-sensitive e2e tests (real Chroma servers, Nginx,
# Chromium, killed replicas) were written for.
pytest: $(STAMP) $(SECOND_CHROMA_STAMP)
	$(BIN)/pytest --durations=30 --ignore=tests/ecs
	$(BIN)/pytest --durations=10 -n auto --dist worksteal tests/ecs

test: lint typecheck pytest

# No service processes, Chroma servers, Nginx, Chromium or moto; one worker per CPU,
# a worker that runs out of tests takes over the other's (worksteal), and without the
# schemathesis and hypothesis plugins only tests/fuzz (e2e) needs.
# One worker more than CPUs: with one per CPU the machine sat 35 % idle (the tests wait
# on timers, sockets and PostgreSQL); on 2 cores, 3 workers ran the two tiers in 41-49 s
# where 2 took 52-56 s, and 4 in 48 s (2026-12-03).
TEST_FAST_WORKERS ?= $(shell echo $$(( $$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1) + 1 )))

test-fast: lint $(STAMP)
	$(BIN)/pytest -m "unit or db" -n $(TEST_FAST_WORKERS) --dist worksteal -p no:schemathesis -p no:hypothesispytest

bench: $(STAMP)
	$(BIN)/python bench/lifecycle.py

clean:
	rm -rf $(VENV) .venvs .mypy_cache .pytest_cache .ruff_cache
