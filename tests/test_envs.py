"""The conda environment of the rules (envs/) stays in step with pyproject.toml.

No conda channel is reachable here, so the environment cannot be built in CI; this test keeps its
package list and version bounds identical to the package's own runtime dependencies instead.
"""

from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO

# The workflow engine and its executor plugins run the rules; they are not needed inside a rule's env.
ENGINE_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}


def _requirements(lines) -> dict[str, str]:
    reqs = {}
    for line in lines:
        name, spec = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", line.strip()).groups()
        reqs[name.lower()] = spec.replace(" ", "")
    return reqs


def test_rule_env_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {k: v for k, v in _requirements(project["dependencies"]).items() if k not in ENGINE_ONLY}
    env = yaml.safe_load((REPO / "envs" / "skullrecon.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _requirements(pip) == wanted
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.replace(" ", "") == "python=3.11"
    assert "pip" in env["dependencies"]


def test_every_rule_declares_the_env_and_a_log():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        rules = re.split(r"^rule ", text, flags=re.M)[1:]
        for body in rules:
            name = body.split(":")[0]
            assert "conda:" in body and "ENV" in body, f"{smk.name}: rule {name} has no conda env"
            assert "log:" in body, f"{smk.name}: rule {name} has no log"
