# phantomdesk — `make run` (the desk on the embedded default) and `make test` (the full suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# the suite's files spread over this many processes (most e2e tests wait on subprocesses and servers)
PYTEST_WORKERS ?= 2

.PHONY: setup run test test-long lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# Embedded default: SQLite under ./var, paper broker, no secrets, offline.
run: setup
	$(PY) -m bot migrate
	$(PY) -m bot demo

# Starts a throwaway PostgreSQL and Redis, runs pytest against them (and SQLite), stops both.
test: setup
	$(PY) -m tests.servers run -- $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The long mode of the proof suites: 20 SIGKILLs per database, a 30 s PostgreSQL outage.
test-long: setup
	PD_CRASH_KILLS=20 PD_OUTAGE_S=30 $(PY) -m tests.servers run -- $(PY) -m pytest $(PYTEST_ARGS) tests/e2e/test_crash.py tests/e2e/test_outage.py

# ruff, then the type gate (mypy with the pydantic plugin; settings in pyproject.toml)
lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

clean:
	rm -rf var .pytest_cache

bench: setup
	$(PY) -m bench
