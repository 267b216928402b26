# Two commands: `make demo` and `make test`. Every target bootstraps .venv on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help demo test lint typecheck pytest bench stress clean distclean venv

help:
	@echo "make demo    run the main job: simulated instruments -> ring (/dev/shm) -> files in ./data"
	@echo "make test    lint + type check + the whole test suite"
	@echo "make lint    ruff check + ruff format --check"
	@echo "make bench   run benchmarks/ and print ratios against the physical limits"
	@echo "make stress  the long multi-process ring stress tests"
	@echo "make clean   remove ./data and caches (distclean also removes .venv)"

# Reinstalls only when pyproject.toml or the constraints change.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "daq-storage needs Python >= 3.11; found " + sys.version.split()[0] + " (set PYTHON=python3.x)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/daq-storage demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks

stress: $(STAMP)
	$(BIN)/python -m pytest -m stress -p no:cacheprovider

clean:
	rm -rf data .pytest_cache .mypy_cache .ruff_cache .hypothesis

distclean: clean
	rm -rf $(VENV)
