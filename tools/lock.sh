#!/usr/bin/env bash
# `make lock`: re-resolve the whole environment from pyproject.toml's ranges and write the pins.
#   requirements.lock       every package of `make demo` / `make test` / .ci/run, transitive ones included
#   envs/skullrecon.yaml    the rules' conda env (--sdm conda): the runtime packages without the engine
#   envs/snakemake.yaml     the login node's engine env: Snakemake and the SLURM plugin
# Resolved by pip-tools (pip-compile, pinned below) for CPython 3.11 on Linux x86-64. pip-compile uses
# pip's resolver and pip's configuration, so on a machine whose pip finds a CPU build of torch the
# lock gets that build's (CUDA-free) dependency list. The lock says `torch==2.13.0` without the
# `+cpu` local label: the pin then matches the CPU build where one is offered and PyPI's build
# elsewhere (PEP 440 ignores a candidate's local label when the pin has none); PyPI's build brings
# its own exactly pinned CUDA libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_TOOLS=pip-tools==7.6.2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install -q "$PIP_TOOLS"
export CUSTOM_COMPILE_COMMAND="make lock"
compile() {  # compile OUTPUT INPUT... [options]
  "$scratch/venv/bin/pip-compile" -q --strip-extras --allow-unsafe --no-emit-index-url \
    --no-emit-find-links --no-emit-trusted-host --newline LF -o "$@"
}
compile requirements.lock --extra test --upgrade pyproject.toml
sed -i 's/^torch==\([0-9.]*\)+cpu$/torch==\1/' requirements.lock

# The conda envs: each one's own closure, constrained to the lock's versions.
python3 tools/env_inputs.py "$scratch"
for env in skullrecon snakemake; do
  compile "$scratch/$env.txt" -c requirements.lock "$scratch/$env.in"
  sed -i 's/^torch==\([0-9.]*\)+cpu$/torch==\1/' "$scratch/$env.txt"
  python3 tools/env_inputs.py "$scratch" --write "$env"
done
echo "requirements.lock and envs/*.yaml written; run make test"
