"""`--profile gpu`: one machine, one card, the GPU rules sharing it through Snakemake's own resources.

Each GPU job declares ``gpu_slots``, its share of a card in eighths from the grid (workflow/rules/common.smk),
and the profile gives Snakemake 8 per card: one job at a time at 256^3, up to 8 side by side at 64^3.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from test_fit_epochs import env, tiny_run
from test_slurm_plan import GPU_RULES, SECOND_STAGE, plan

TRAIN_RULES = {"train_mae", "train_baseline"}


def test_paper_jobs_take_the_whole_card_and_64_cubed_jobs_an_eighth(tmp_path):
    assert yaml.safe_load((REPO / "gpu" / "config.yaml").read_text())["resources"] == ["gpu_slots=8"]
    paper = plan("--profile", "gpu")
    # the real SkullFix copy may be absent here: point the dataset at an empty folder for planning
    realdata = plan("--profile", "gpu", "--configfile", "realdata/run-gpu.yaml",
                    "--config", f"datasets={{'skullfix': {{'data_dir': '{tmp_path}'}}}}")
    for jobs, slots in ((paper, "8"), (realdata, "1")):
        assert GPU_RULES - SECOND_STAGE <= set(jobs), sorted(jobs)  # neither config has a second stage
        for rule, entries in jobs.items():
            assert all(res.get("gpu_slots") == (slots if rule in GPU_RULES else None) for res in entries), rule
    # the two MAEs and five baselines on SkullFix and on the SkullBreak-like set: eight of an eighth at a time
    assert len(realdata["train_mae"]) + len(realdata["train_baseline"]) == 12


def most_side_by_side(log: str, rules: set[str]) -> int:
    """The most jobs of ``rules`` Snakemake had started and not yet seen finish, from its log in order."""
    running, most, rule = set(), 0, None
    for line in log.splitlines():
        if m := re.match(r"(?:local)?rule (\w+):$", line):
            rule = m.group(1)
        elif (m := re.match(r"\s+jobid: (\d+)$", line)) and rule in rules:
            running.add(m.group(1))
            most = max(most, len(running))
        elif m := re.match(r"Finished jobid: (\d+) ", line):
            running.discard(m.group(1))
    return most


@pytest.mark.slow
def test_trainings_run_side_by_side_within_the_cards_slots(tmp_path):
    """Four one-slot trainings (32^3, on the CPU here) on a card of two slots: two at a time, never three,
    with cores to spare for more (the profile's 2 threads per job, 8 cores)."""
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tiny_run("gpu-profile", mae=1, baselines=1)))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "gpu"),
           "--resources", "gpu_slots=2", "--cores", "8", "--until", *sorted(TRAIN_RULES), "--configfile", "run.yaml"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert len(list((tmp_path / "results" / "gpu-profile" / "networks").glob("*.pt"))) == 4
    assert most_side_by_side(log, TRAIN_RULES) == 2, log[-6000:]
    assert "gpu_slots=1" in log  # each of them asked for one slot
