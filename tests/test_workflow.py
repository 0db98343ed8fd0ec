"""The whole DAG through the snakemake command line, on a tiny synthetic config (a few minutes)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO

CONFIG = REPO / "tests" / "workflow" / "run.yaml"
RUN = yaml.safe_load(CONFIG.read_text())["run"]
RESULTS = REPO / "results" / RUN
METHODS = ["mae_d", "mae_nd", "unet", "unetr", "swinunetr", "attentionunet", "segresnet"]


def snakemake(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--configfile", str(CONFIG), "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="module")
def workflow_run():
    shutil.rmtree(RESULTS, ignore_errors=True)
    snakemake("--show-failed-logs")
    yield RESULTS
    shutil.rmtree(RESULTS, ignore_errors=True)


@pytest.mark.slow
def test_table_and_figures_cover_every_method_and_dataset(workflow_run):
    md = (workflow_run / "table1.md").read_text()
    for label in ["MAE (D)", "MAE (ND)", "UNet", "UNETR", "SwinUNETR", "AttentionUnet", "SegResNet"]:
        assert len(re.findall(rf"^\| {re.escape(label)} \|", md, flags=re.M)) == 2, label
    assert "## SkullBreak" in md and "## SkullFix" in md
    for png in ("figure4.png", "figure3.png", "masking_examples.png"):
        assert (workflow_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resolved = yaml.safe_load((workflow_run / "config.yaml").read_text())
    assert resolved == yaml.safe_load(CONFIG.read_text())


@pytest.mark.slow
def test_table1_is_computed_from_the_per_case_files(workflow_run):
    table = pd.read_csv(workflow_run / "table1.csv")
    assert len(table) == 2 * len(METHODS)
    for row in table.itertuples():
        cases = pd.read_csv(workflow_run / "metrics" / row.dataset / f"{row.method}.csv")
        assert row.cases == len(cases)
        assert row.failed == int(cases["empty_prediction"].sum())
        assert np.isclose(row.dsc_mean, cases["dsc"].mean(), atol=1e-4)
        assert np.isclose(row.bdsc_median, cases["bdsc"].median(), atol=1e-4)


@pytest.mark.slow
def test_implants_are_on_the_original_grid(workflow_run):
    from skullrecon.io import read_volume

    cases = pd.read_csv(workflow_run / "preprocessed" / "skullfix" / "test" / "cases.tsv", sep="\t", dtype=str)
    for case in cases.itertuples():
        defective = read_volume(case.defective)
        implant = read_volume(workflow_run / "implants" / "skullfix" / "mae_d" / f"{case.name}.nrrd")
        assert implant.shape == defective.shape
        np.testing.assert_allclose(implant.affine, defective.affine)
        assert not (implant.array & defective.array).any()


@pytest.mark.slow
def test_forcerun_reruns_only_the_rule_and_its_dependants(workflow_run):
    out = snakemake("-n", "--forcerun", "metrics", "--quiet", "rules").stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert counts.pop("metrics") == str(2 * len(METHODS))
    assert set(counts) <= {"table1", "figure4", "all", "total"}, counts
    assert "train_mae" not in out and "infer" not in out


@pytest.mark.slow
def test_nothing_left_to_do_after_a_run(workflow_run):
    assert "Nothing to be done" in snakemake("-n").stdout + snakemake("-n").stderr


def test_lint_is_clean_for_every_config():
    for configfile in ("config.yaml", "demo/run.yaml", str(CONFIG)):
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--configfile", configfile], cwd=REPO,
                              capture_output=True, text=True)
        assert proc.returncode == 0 and "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_paper_dag_has_every_stage_method_and_dataset():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", "rules"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    assert counts["download_dataset"] == "2"
    assert counts["preprocess"] == "4"
    assert counts["train_mae"] == "2"
    assert counts["train_baseline"] == "10"
    for rule in ("infer", "upsample", "extract_implants", "metrics"):
        assert counts[rule] == "14", rule


def test_invalid_config_is_a_clear_error(tmp_path):
    bad = yaml.safe_load(CONFIG.read_text())
    bad["preprocess"]["grid"] = 100  # not a multiple of 32
    bad["mae"]["train"]["epochz"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(path)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "multiple of 32" in proc.stderr + proc.stdout or "multipleOf" in proc.stderr + proc.stdout
