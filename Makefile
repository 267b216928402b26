# Two commands: `make demo` and `make test`. Every target bootstraps .venv on demand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# PYTHON named on the command line or in the environment must be the interpreter of
# .venv: otherwise .venv is rebuilt with it (a PYTHON= that an existing .venv silently
# ignored ran the suite on the wrong Python).
ifneq ($(filter command line environment,$(origin PYTHON)),)
ifneq ($(wildcard $(BIN)/python),)
_version = $(shell $(1) -c 'import sys; print(sys.version.split()[0], sys.implementation.name)' 2>/dev/null)
ifneq ($(call _version,$(BIN)/python),$(call _version,$(PYTHON)))
$(info .venv runs Python $(call _version,$(BIN)/python); PYTHON=$(PYTHON) is $(call _version,$(PYTHON)): rebuilding .venv)
$(shell rm -rf $(VENV))
endif
endif
endif

.DEFAULT_GOAL := help
.PHONY: help demo test lint typecheck pytest bench stress clean distclean venv

help:
	@echo "make demo    run the main job: simulated instruments -> ring (/dev/shm) -> Recorder -> HDF5 + Arrow IPC in ./data"
	@echo "make test    lint + type check + the whole test suite"
	@echo "make lint    ruff check + ruff format --check"
	@echo "make bench   run benchmarks/ and print ratios against the physical limits"
	@echo "make stress  the long multi-process ring stress tests"
	@echo "make clean   remove caches (distclean also removes .venv); ./data, your recordings, stays"

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

# On every core, at most four workers: most tests wait on other processes (writers killed,
# rings drained, servers), so workers overlap their waits.
pytest: $(STAMP)
	$(BIN)/python -m pytest --numprocesses=auto --maxprocesses=4

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks

stress: $(STAMP)
	$(BIN)/python -m pytest -m stress -p no:cacheprovider

# ./data is where recordings go by default: no target deletes it.
clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis

distclean: clean
	rm -rf $(VENV)
