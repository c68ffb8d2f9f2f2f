# perfnb — the commands of the README. Every target sets up what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.perfnb-installed

.PHONY: setup sysdeps demo test lint typecheck pytest bench bench-deps lab clean

setup: $(STAMP)

# The venv is rebuilt only when its inputs change.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# Debian packages the tests need: headless Chromium (browser tests) and nginx (a fast
# load target perfnb did not write); skipped when present.
sysdeps:
	@command -v chromium >/dev/null 2>&1 && { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1 || { \
		echo "installing Debian chromium and nginx (browser and load tests)"; \
		apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium nginx >/dev/null; }

demo: setup
	$(BIN)/perfnb demo --store data

lab: setup sysdeps
	$(BIN)/perfnb lab

lint: setup
	$(BIN)/ruff check perfnb tests benchmarks
	$(BIN)/ruff format --check perfnb tests benchmarks

typecheck: setup
	$(BIN)/mypy

pytest: setup sysdeps
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

# Contenders for the benchmarks: Python ones from the bench extra, nginx and wrk from Debian.
bench-deps: setup
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	@command -v nginx >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 || { \
		apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get -o DPkg::Lock::Timeout=600 install -y -qq nginx wrk >/dev/null; }

bench: bench-deps
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
