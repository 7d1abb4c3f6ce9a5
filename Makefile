# The two commands of the README's quick start, and the environment they need.
# `make demo` runs the main job on the embedded data; `make test` runs the suite.
# Both create .venv on first use: torch==2.13.0 first (so that the project's torch range
# installs nothing more), then this project, editable, with its test extra.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(STAMP)
	$(BIN)/python -m training.sweep --preset quick --out ckpt
	$(BIN)/python -m repsim.report ckpt

# pytest exits 5 when it collects no test; any non-zero exit fails the target.
test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
