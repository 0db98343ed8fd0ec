#!/usr/bin/env bash
# Snakemake runs this once inside a newly created rule environment (--sdm conda): it installs the
# skullrecon library of this workflow into it, editable, so the rules import the workflow's own
# code (no sys.path patching) and a code change needs no new environment. The Snakefile sets
# SKULLRECON_WORKFLOW_DIR to the workflow's directory (it also works with --directory).
set -euo pipefail
python -m pip install --no-deps -e "${SKULLRECON_WORKFLOW_DIR:?is set by the workflow's Snakefile; run through snakemake}"
python -c "import skullrecon.train"
