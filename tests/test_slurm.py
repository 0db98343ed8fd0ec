"""`snakemake --profile slurm` against a real SLURM cluster (one node with a fake a100 GPU).

CI brings the cluster up with `bash .ci/slurm-up.sh` (root, Debian 12): one node in two
partitions, `main` (default) and `gpu`. The test runs the tiny config tests/slurm/run.yaml (a
user's own --configfile, with no cluster settings) twice in a copy of the workflow: once through
the slurm profile as a site would set it up (its GPU partition named in the profile's
set-resources) with the CPU partition given by the plugin's own flag `--default-resources
slurm_partition=main`, and once locally (`--cores 2`). It checks that

* every non-local rule went through sbatch, and no local rule did;
* training and inference asked for one A100 (`--gpus=a100:1`, from the profile, not the config)
  on the `gpu` partition; the CPU jobs asked for no GPU, on `main`; each job carried the
  runtime, memory and threads its rule declares;
* SLURM recorded the GPU request and partition and ran the jobs to COMPLETED (scontrol);
* the per-case metrics of both runs are identical (CPU training is seeded and runs with the
  same thread count in both, so the networks and everything after them are bit-identical).

What the one-node test adds, and nothing else: the status command (`squeue`: the CI cluster
has no accounting database, so `sacct` cannot answer), the first status check after 1 s instead
of 40 s, and `--max-threads 2` (the node's cores).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "slurm" / "run.yaml"
TIMEOUT_S = 600
NODE_THREADS = 2
# what the rules declare (workflow/rules/*.smk): threads (capped to the node) and runtime in minutes
RULE_THREADS = {"preprocess": 2, "train_mae": 8, "train_baseline": 8, "infer": 8, "upsample": 2,
                "extract_implants": 1, "metrics": 2}
RULE_RUNTIME = {"preprocess": 240, "train_mae": 1440, "train_baseline": 1440, "infer": 120, "upsample": 120,
                "extract_implants": 120, "metrics": 120}
CLUSTER_RULES = {"preprocess", "train_mae", "train_baseline", "infer", "upsample", "extract_implants", "metrics"}
GPU_RULES = {"train_mae", "train_baseline", "infer"}
LOCAL_RULES = {"synthesize_dataset", "resolved_config", "bundle_model", "masking_examples", "table1", "figure3",
               "figure4", "training_curves", "all"}

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _cluster_partitions() -> set[str]:
    """The partitions of a running cluster with a usable node, or skip with the reason."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed (no sinfo/sbatch); as root: bash .ci/slurm-up.sh")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.skip("sinfo did not answer in 20 s: slurmctld is not running (bash .ci/slurm-up.sh)")
    if out.returncode != 0:
        pytest.skip(f"the SLURM cluster is not up (sinfo: {out.stderr.strip()}); bash .ci/slurm-up.sh")
    usable = [line.split() for line in out.stdout.splitlines()
              if line.split()[-1] in ("idle", "mixed", "allocated", "completing")]
    if not usable:
        pytest.skip(f"no usable SLURM node (sinfo: {out.stdout.strip()!r}); bash .ci/slurm-up.sh")
    partitions = {p.rstrip("*") for p, _ in usable}
    if not {"main", "gpu"} <= partitions:
        pytest.skip(f"the test cluster needs partitions main and gpu (sinfo: {sorted(partitions)}); "
                    "bash .ci/slurm-up.sh")
    return partitions


def _copy_workflow(dest: Path) -> Path:
    """The workflow without results, so both runs start clean and the repo stays untouched."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("workflow", "src", "envs", "slurm"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


def _site_profile(work: Path) -> Path:
    """slurm/config.yaml as a site sets it up: its GPU partition named for the GPU rules."""
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    for rule in GPU_RULES:
        profile["set-resources"][rule]["slurm_partition"] = "gpu"
    out = work / "profile-site"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return out


def _snakemake(args: list[str], cwd: Path, log: Path) -> subprocess.CompletedProcess:
    # SIGINT, not SIGTERM: a snakemake waiting on cluster jobs ignores SIGTERM, and SIGINT makes it
    # cancel its SLURM jobs before it exits.
    cmd = ["timeout", "-s", "INT", "-k", "60", str(TIMEOUT_S), sys.executable, "-m", "snakemake", *args]
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-80:])
        raise AssertionError(f"{' '.join(cmd)} exited with {proc.returncode}"
                             f"{' (timed out)' if proc.returncode == 124 else ''}:\n{tail}")
    return proc


def _sbatch_calls(text: str) -> dict[str, list[str]]:
    """The sbatch command lines of a `--verbose` log, by rule."""
    calls: dict[str, list[str]] = {}
    for line in re.findall(r"sbatch call: (sbatch .*)", text):
        rule = re.search(r"--comment '?rule_([A-Za-z0-9]+(?:_[A-Za-z0-9]+)*?)(?:_wildcards_[^' ]*)?'? ", line)
        assert rule, f"no rule in sbatch call: {line}"
        calls.setdefault(rule.group(1), []).append(line)
    return calls


def _metrics(run_dir: Path) -> dict[str, str]:
    files = sorted((run_dir / "metrics").glob("*/*.csv"))
    return {str(f.relative_to(run_dir)): f.read_text() for f in files}


def test_profile_submits_gpu_jobs_and_matches_local_run(tmp_path):
    _cluster_partitions()
    work = _copy_workflow(tmp_path)
    profile = _site_profile(tmp_path)
    gpu_model = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())["set-resources"]["train_mae"]["gpu_model"]
    assert gpu_model == "a100"

    # 1. through SLURM: the CPU partition from the plugin's own flag, the GPU one from the profile
    slurm_log = tmp_path / "slurm.log"
    try:
        _snakemake(["--profile", str(profile), "--configfile", str(CONFIG), "--config", "run=slurm",
                    "--default-resources", "slurm_partition=main", "--max-threads", str(NODE_THREADS),
                    "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
                    "--verbose"], work, slurm_log)
    finally:
        # nothing of ours may stay queued (a timed-out run cancels its jobs, this is the safety net)
        ids = re.findall(r"has been submitted with SLURM jobid (\d+)", slurm_log.read_text())
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True)
    text = slurm_log.read_text()
    calls = _sbatch_calls(text)

    assert set(calls) == CLUSTER_RULES, f"submitted rules {sorted(calls)}, expected {sorted(CLUSTER_RULES)}"
    assert not set(calls) & LOCAL_RULES
    assert {r: len(c) for r, c in calls.items()} == {
        "preprocess": 2, "train_mae": 1, "train_baseline": 1, "infer": 2, "upsample": 2,
        "extract_implants": 2, "metrics": 2}
    for rule, lines in calls.items():
        for line in lines:
            partition = "gpu" if rule in GPU_RULES else "main"
            assert re.search(rf" -p '?{partition}'? ", line), line
            assert f"--cpus-per-task={min(RULE_THREADS[rule], NODE_THREADS)}" in line, line
            assert re.search(r" --mem '?\d+'? ", line), line
            assert re.search(rf" -t '?{RULE_RUNTIME[rule]}'? ", line), line
            if rule in GPU_RULES:
                assert f"--gpus={gpu_model}:1" in line, line
            else:
                assert "--gpus" not in line and "--gres" not in line, line
    # the local rules ran on this host, in the same run
    for rule in LOCAL_RULES - {"all"}:
        assert re.search(rf"localrule {rule}:", text), f"local rule {rule} did not run locally"

    # what SLURM recorded for each job, while it still remembers it (MinJobAge, 300 s by default)
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: \S*rule_([a-z_]+)", text)
    for jobid, rule in submitted:
        info = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True).stdout
        if not info:
            continue
        assert "JobState=COMPLETED" in info, info
        assert f"Partition={'gpu' if rule in GPU_RULES else 'main'} " in info, f"{rule}: {info}"
        tres = " ".join(re.findall(r"(?:TRES|TresPerJob|TresPerNode)=\S*", info))
        if rule in GPU_RULES:
            assert f"gres:gpu:{gpu_model}:1" in tres, f"{rule}: {info}"
        else:
            assert "gpu" not in tres, f"{rule}: {info}"

    # 2. locally, same workflow copy, another run name
    _snakemake(["--cores", "2", "--configfile", str(CONFIG), "--config", "run=local"], work,
               tmp_path / "local.log")

    slurm_metrics, local_metrics = _metrics(work / "results" / "slurm"), _metrics(work / "results" / "local")
    assert sorted(slurm_metrics) == ["metrics/skullbreak/mae_d.csv", "metrics/skullbreak/unet.csv"]
    assert slurm_metrics == local_metrics
    for name in ("table1.csv", "figure4.png", "figure3.png", "masking_examples.png", "config.yaml"):
        assert (work / "results" / "slurm" / name).exists(), name
