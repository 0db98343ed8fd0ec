# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv first.
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup demo test lint

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/.installed

demo: setup  ## the offline synthetic demo, end to end: results/demo/table1.md, figure4.png, ...
	snakemake --profile demo

test: setup  ## unit tests, the whole DAG on a tiny config, and the SLURM test where a cluster is up
	python -m pytest -q -ra

lint: setup
	snakemake --lint
