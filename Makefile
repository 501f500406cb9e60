# Two commands on a fresh machine: `make test` and `make demo`.
# Each installs what it needs: a .venv with the pinned packages and Azurite from npm.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: test lint typecheck pytest install clean demo up fuzz

install: $(PY_STAMP) $(NODE_STAMP)

$(PY_STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's Chromium and ChromeDriver for the dashboard's browser test (Playwright from PyPI drives
# /usr/bin/chromium; `playwright install` cannot download browsers here). The target is the
# browser itself: installed when missing (sudo unless root; apt-get update first if the package
# lists are empty, as on a clean machine).
$(CHROMIUM):
	@sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	packages="chromium chromium-driver"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo apt-get install -y --no-install-recommends $$packages \
	  || { $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends $$packages; }

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(PY_STAMP)
	$(BIN)/mypy

# Azurite (queue + table, in memory, on free ports) is started by tests/conftest.py for the
# session and stopped afterwards; nothing here assumes ports 10000-10002 are free.
pytest: install $(CHROMIUM)
	$(BIN)/pytest $(PYTEST_ARGS)

test: install lint typecheck pytest

# The whole product on this machine (Azurite, both emulators, the local Functions host running
# function_app.py) playing a scripted co-sell story; prints each step with its latency.
demo: install
	$(BIN)/python -m sandbox demo

# The same stack, left running until Ctrl-C (ports from SANDBOX_* variables).
up: install
	$(BIN)/python -m sandbox up

# The webhook fuzz test with 10,000 generated bodies and headers (make test runs 1,000).
fuzz: install
	COSELL_FUZZ_EXAMPLES=10000 $(BIN)/pytest tests/functions/test_webhook_fuzz.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache

.PHONY: bench chaos

# SPEC 11 measured on this machine (sandbox stack, ~5-10 min); writes bench/README.md and the chart.
bench: install
	$(BIN)/python -m bench run

# 1,000 referrals through faults, dropped webhooks and host kills; fails unless all converge.
chaos: install
	$(BIN)/python -m bench chaos --referrals $(or $(N),1000)
