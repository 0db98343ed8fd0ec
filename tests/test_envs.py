"""The environments stay locked and in step: requirements.lock, envs/*.yaml and pyproject.toml.

`make lock` (tools/lock.sh) writes the lock and both conda envs. No conda channel is reachable here,
so the envs cannot be built in CI; these tests keep their pins identical to the lock's, the lock
complete for pyproject.toml's dependencies, and every locked version inside pyproject.toml's range.
"""

from __future__ import annotations

import re
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

# The workflow engine and its executor plugins run the rules; they are not needed inside a rule's env.
ENGINE_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}


def _pins(lines) -> dict[str, str]:
    """name -> exact version of `name==version` lines; anything else is a failure of the lock."""
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+!\-]+)", line)
        assert match, f"not an exact pin: {line!r}"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _lock() -> dict[str, str]:
    return _pins((REPO / "requirements.lock").read_text().splitlines())


def _env_pins(name: str) -> dict[str, str]:
    env = yaml.safe_load((REPO / "envs" / name).read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.replace(" ", "") == "python=3.11"
    assert "pip" in env["dependencies"]
    return _pins(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d))


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for reqs in project["optional-dependencies"].values() for r in reqs]
    return [Requirement(line.split("#")[0]) for line in project["dependencies"] + extras]


def test_lock_pins_every_dependency_inside_its_range():
    lock = _lock()
    for req in _project_requirements():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is missing from requirements.lock (run make lock)"
        assert req.specifier.contains(lock[name], prereleases=True), f"lock {name}=={lock[name]} outside {req}"


def test_torch_is_locked_without_a_local_label():
    """`torch==2.13.0` matches the CPU build where one is offered and PyPI's build elsewhere."""
    assert _lock()["torch"] == "2.13.0"


def test_envs_take_the_locks_pins():
    lock = _lock()
    for name in ("skullrecon.yaml", "snakemake.yaml"):
        pins = _env_pins(name)
        assert pins, name
        wrong = {k: (v, lock.get(k)) for k, v in pins.items() if lock.get(k) != v}
        assert not wrong, f"envs/{name} differs from requirements.lock: {wrong}"


def test_rule_env_has_the_runtime_and_not_the_engine():
    pins = _env_pins("skullrecon.yaml")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for req in (Requirement(line.split("#")[0]) for line in project["dependencies"]):
        name = canonicalize_name(req.name)
        assert (name in pins) == (name not in ENGINE_ONLY), name


def test_engine_env_has_snakemake_and_the_plugin():
    """The login node's env has Snakemake and the SLURM plugin (>= 2.0.1: --slurm-status-command)."""
    pins = _env_pins("snakemake.yaml")
    assert ENGINE_ONLY <= set(pins)
    assert "torch" not in pins
    version = tuple(int(x) for x in re.match(r"[\d.]+", pins["snakemake-executor-plugin-slurm"]).group(0).split("."))
    assert version >= (2, 0, 1)


def test_make_installs_from_the_lock():
    makefile = (REPO / "Makefile").read_text()
    assert "pip install -q --no-compile -r requirements.lock" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text()


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
