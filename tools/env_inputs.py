"""Helper of tools/lock.sh: the conda envs' inputs from pyproject.toml, and their YAML from the pins.

    python3 tools/env_inputs.py DIR            writes DIR/skullrecon.in and DIR/snakemake.in
    python3 tools/env_inputs.py DIR --write E  writes envs/E.yaml from DIR/E.txt (pip-compile's output)

Standard library only: it runs with the machine's python3 before any environment exists.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The workflow engine and its executor plugin run the rules; a rule's env does not need them.
ENGINE_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}

HEADERS = {
    "skullrecon": """\
# Conda environment of every rule (snakemake --sdm conda): the locked runtime packages of
# requirements.lock without the workflow engine. Written by `make lock` (tools/lock.sh); do not edit.
# tests/test_envs.py keeps it in step with the lock and with pyproject.toml's ranges.
""",
    "snakemake": """\
# The workflow engine for the login node (`conda env create -f envs/snakemake.yaml`, then
# `snakemake --profile slurm [--sdm conda]`): Snakemake and the SLURM executor plugin at the versions of
# requirements.lock. Written by `make lock` (tools/lock.sh); do not edit.
# snakemake-executor-plugin-slurm >= 2.0.1: the first release with --slurm-status-command.
""",
}
CHANNELS = {"skullrecon": ["conda-forge", "nodefaults"], "snakemake": ["conda-forge", "bioconda", "nodefaults"]}


def _name(requirement: str) -> str:
    return re.match(r"^\s*([A-Za-z0-9_.\-]+)", requirement).group(1).lower()


def write_inputs(out: Path) -> None:
    deps = [d.split("#")[0].strip() for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    (out / "skullrecon.in").write_text("\n".join(d for d in deps if _name(d) not in ENGINE_ONLY) + "\n")
    (out / "snakemake.in").write_text("\n".join(d for d in deps if _name(d) in ENGINE_ONLY) + "\n")


def write_env(out: Path, env: str) -> None:
    pins = [line.strip() for line in (out / f"{env}.txt").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    lines = [HEADERS[env], "channels:", *(f"  - {c}" for c in CHANNELS[env]), "dependencies:",
             "  - python =3.11", "  - pip", "  - pip:", *(f"      - {p}" for p in pins)]
    (REPO / "envs" / f"{env}.yaml").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    if len(sys.argv) == 4 and sys.argv[2] == "--write":
        write_env(folder, sys.argv[3])
    else:
        write_inputs(folder)
