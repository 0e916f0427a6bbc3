# kdlab: one command to set up, one to run the main job, one to test.
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
TORCH     ?= torch==2.13.0
DATA_DIR  ?= $(abspath ../shared/data)
export KDLAB_DATA_DIR ?= $(DATA_DIR)

.PHONY: install run smoke test test-slow lint bench clean

install:  ## virtual environment + kdlab (editable) + dependencies, CPU torch
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[test]"

run:  ## main job: fine-tune MiniLM on SST-2, distil it with SinKD, print the table
	$(BIN)/kdlab experiment=glue_minilm

smoke:  ## the whole pipeline on tiny slices (under 2 minutes)
	$(BIN)/kdlab experiment=smoke

test:  ## fast offline test suite
	$(BIN)/pytest -q

test-slow:  ## long end-to-end runs too
	$(BIN)/pytest -q -m "slow or not slow"

lint:
	$(BIN)/ruff check kdlab tests scripts

bench:
	$(BIN)/python scripts/bench_divergences.py

clean:
	rm -rf outputs multirun .pytest_cache
