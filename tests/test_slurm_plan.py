"""What `snakemake --profile slurm -n` plans to ask SLURM for (no cluster needed; the real
submission is tests/test_slurm.py).

The profile, not the config, says where jobs run: training and inference ask for one A100
whatever --configfile is given, and a user's partition given with the SLURM plugin's own flags
(--default-resources, --set-resources) reaches the jobs, separately for CPU and GPU rules.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import REPO

GPU_RULES = {"train_mae", "train_baseline", "infer", "train_refiner", "refine"}
SECOND_STAGE = {"train_refiner", "refine"}  # planned only where a config has a refine section
CPU_RULES = {"preprocess", "upsample", "extract_implants", "metrics"}


def plan(*args: str, cwd: Path = REPO) -> dict[str, list[dict[str, str]]]:
    """Per rule, the resources of each planned job."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs: dict[str, list[dict[str, str]]] = {}
    for rule, block in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", proc.stdout, flags=re.M | re.S):
        res = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        pairs = dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}
        jobs.setdefault(rule, []).append(pairs)
    return jobs


def assert_a100_for_gpu_rules(jobs):
    assert GPU_RULES - SECOND_STAGE <= set(jobs), sorted(jobs)
    for rule, entries in jobs.items():
        for res in entries:
            if rule in GPU_RULES:
                assert res.get("gpu") == "1" and res.get("gpu_model") == "a100", (rule, res)
                assert int(res["runtime"]) >= 120 and int(res["mem_mb"]) >= 2000, (rule, res)
            else:
                assert not {"gpu", "gpu_model", "gpu_slots"} & set(res), (rule, res)


def test_paper_config_asks_for_a100(tmp_path):
    assert_a100_for_gpu_rules(plan("--profile", "slurm"))


def test_gpu_realdata_config_asks_for_a100(tmp_path):
    # the real SkullFix copy may be absent here: point the dataset at an empty folder for planning
    jobs = plan("--profile", "slurm", "--configfile", "realdata/run-256.yaml",
                "--config", f"datasets={{'skullfix': {{'data_dir': '{tmp_path}'}}}}")
    assert_a100_for_gpu_rules(jobs)
    config = yaml.safe_load((REPO / "realdata" / "run-256.yaml").read_text())
    scored = len(config["datasets"]) + len(config.get("generalisation") or {})  # + new defects on its test skulls
    assert len(jobs["train_baseline"]) == 5 and len(jobs["infer"]) == 7 * scored


def test_users_own_configfile_asks_for_a100(tmp_path):
    own = yaml.safe_load((REPO / "demo" / "run.yaml").read_text())
    own.update(run="mine", device="auto")
    # with a second stage: its training and its refine jobs are GPU jobs like the rest
    own["refine"] = yaml.safe_load((REPO / "tests" / "workflow" / "run.yaml").read_text())["refine"]
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(own))
    jobs = plan("--profile", "slurm", "--configfile", str(tmp_path / "mine.yaml"))
    assert SECOND_STAGE <= set(jobs), sorted(jobs)
    assert_a100_for_gpu_rules(jobs)


def test_partitions_from_the_plugin_flags_cpu_and_gpu_apart(tmp_path):
    """A site names its GPU partition in the profile; a user picks the CPU partition and account on the command line."""
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    for rule in GPU_RULES:
        profile["set-resources"][rule]["slurm_partition"] = "gpu"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "config.yaml").write_text(yaml.safe_dump(profile))
    jobs = plan("--profile", str(tmp_path / "site"), "--default-resources", "slurm_partition=cpu",
                "slurm_account=proj42")
    assert_a100_for_gpu_rules(jobs)
    for rule in GPU_RULES | CPU_RULES:
        for res in jobs.get(rule, []):
            assert res["slurm_partition"] == ("gpu" if rule in GPU_RULES else "cpu"), (rule, res)
            assert res["slurm_account"] == "proj42", (rule, res)
    # the rules' own sizes survive a --default-resources that replaces the profile's
    assert {res["runtime"] for res in jobs["train_mae"]} == {"1440"}


def test_set_resources_on_the_command_line_reaches_the_rule():
    jobs = plan("--profile", "slurm", "--set-resources", "train_mae:slurm_partition=gpu-long",
                "train_mae:gpu_model=h100", "train_mae:runtime=2880")
    assert {(r["slurm_partition"], r["gpu_model"], r["runtime"]) for r in jobs["train_mae"]} == {("gpu-long", "h100", "2880")}
    assert all(r["gpu"] == "1" and r["mem_mb"] == "64000" for r in jobs["train_mae"])


def test_retries_only_for_training_and_inference():
    """A deterministic failure of a CPU rule is not repeated; training and inference are benchmarked."""
    text = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    rules = dict(re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, flags=re.M | re.S))
    assert {name for name, body in rules.items() if "retries:" in body} == GPU_RULES
    assert "retries" not in yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert all("benchmark:" in rules[name] for name in GPU_RULES)


class _Resources(dict):
    """A job's resources as the SLURM plugin reads them (``job.resources.get(k)``, ``job.resources.k``)."""

    def __getattr__(self, key):
        return self[key]


def test_gpu_slots_never_reach_sbatch():
    """The one-machine profile's share of a card (``gpu_slots``, docs/gpu.md) is declared by the GPU rules for
    every executor; the SLURM plugin builds its sbatch call from the resources it knows and leaves it out."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    jobs = plan("--profile", "slurm")
    params = {"run_uuid": "run", "slurm_logfile": "log", "comment_str": "rule", "account": "", "partition": "",
              "workdir": "."}
    for rule in GPU_RULES - SECOND_STAGE:  # the paper's config has no second stage
        res = jobs[rule][0]
        assert res["gpu_slots"] == "8", res  # the paper's 256^3: a whole card
        job = SimpleNamespace(name=rule, threads=8, is_group=lambda: False,
                              resources=_Resources({k: int(v) if v.isdigit() else v for k, v in res.items()}))
        call = get_submit_command(job, params) + set_gres_string(job)
        assert "--gpus=a100:1" in call and "slot" not in call, call
