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


def _env_pip(name: str) -> dict[str, str]:
    env = yaml.safe_load((REPO / "envs" / name).read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.replace(" ", "") == "python=3.11"
    assert "pip" in env["dependencies"]
    return _requirements(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d))


def _project_requirements() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return _requirements(line.split("#")[0] for line in project["dependencies"])


def test_rule_env_matches_pyproject():
    wanted = {k: v for k, v in _project_requirements().items() if k not in ENGINE_ONLY}
    assert _env_pip("skullrecon.yaml") == wanted


def test_engine_env_matches_pyproject():
    """The login node's env has the same Snakemake and SLURM plugin floors as the package."""
    wanted = {k: v for k, v in _project_requirements().items() if k in ENGINE_ONLY}
    assert _env_pip("snakemake.yaml") == wanted
    # the profile and docs use --slurm-status-command, new in plugin 2.0.1
    floor = wanted["snakemake-executor-plugin-slurm"]
    assert tuple(int(x) for x in re.match(r">=([\d.]+)", floor).group(1).split(".")) >= (2, 0, 1), floor


def test_rule_env_installs_the_workflow_library():
    """--sdm conda: the post-deploy script installs this workflow's package (no sys.path patching)."""
    script = (REPO / "envs" / "skullrecon.post-deploy.sh").read_text()
    assert re.search(r"pip install --no-deps -e \"\$\{SKULLRECON_WORKFLOW_DIR", script)
    assert 'os.environ.setdefault("SKULLRECON_WORKFLOW_DIR", workflow.basedir)' in (REPO / "Snakefile").read_text()
    for script in (REPO / "workflow" / "scripts").glob("*.py"):
        assert "sys.path" not in script.read_text(), script.name


def test_every_rule_declares_the_env_and_a_log():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        rules = re.split(r"^rule ", text, flags=re.M)[1:]
        for body in rules:
            name = body.split(":")[0]
            assert "conda:" in body and "ENV" in body, f"{smk.name}: rule {name} has no conda env"
            assert "log:" in body, f"{smk.name}: rule {name} has no log"
