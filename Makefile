# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv first.
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
# The install skips compiling bytecode (--no-compile, below); each module is compiled once, at its first
# import, into .venv. A shell that sets PYTHONDONTWRITEBYTECODE (many container images do) would make every
# job of a run compile torch and MONAI again: about 10 s per process, 82 processes in the demo.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test lint lock upgrade-check

# Exactly the locked versions (requirements.lock, written by `make lock`); pyproject.toml's ranges are for
# people who use the library in an environment of their own. Bytecode is compiled at first import
# (--no-compile: the install takes half the time); the project itself is built with the locked setuptools.
$(BIN)/.installed: requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile -r requirements.lock
	$(BIN)/python -m pip install -q --no-compile --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

setup: $(BIN)/.installed

demo: setup  ## the offline synthetic demo, end to end: results/demo/table1.md, figure4.png, ...
	snakemake --profile demo

test: setup  ## unit tests, the whole DAG on a tiny config, and the SLURM test where a cluster is up
	python -m pytest -q -ra --durations=15

lint: setup
	snakemake --lint

lock:  ## re-resolve the newest versions pyproject.toml allows into requirements.lock and envs/*.yaml
	bash tools/lock.sh

upgrade-check:  ## the newest versions the ranges allow, in a scratch env: what moved, and the quick tests on them
	bash tools/upgrade_check.sh
