# chroma-orch: `make serve` runs the service on the embedded defaults; `make test` passes the tests;
# `make test-fast` runs ruff and the unit and db tiers only (README: Development).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: serve test test-fast lint typecheck pytest bench clean

$(STAMP): pyproject.toml setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "chroma-orch needs Python >= 3.11 (set PYTHON=python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[local,dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/chroma-orch serve

lint: $(STAMP)
	$(BIN)/ruff check src migrations tests bench setup.py
	$(BIN)/ruff format --check src migrations tests bench setup.py
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# No service processes, Chroma servers, Nginx, Chromium or moto; one worker per CPU.
test-fast: lint $(STAMP)
	$(BIN)/pytest -m "unit or db" -n auto

bench: $(STAMP)
	$(BIN)/python bench/lifecycle.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
