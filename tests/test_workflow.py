"""The whole DAG through the snakemake command line, on a tiny synthetic config (a few minutes)."""

from __future__ import annotations

import io
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
SCORED = ["skullbreak", "skullfix", "skullfix_generalisation"]  # the last: new defects on skullfix's test skulls


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
        assert len(re.findall(rf"^\| {re.escape(label)} \|", md, flags=re.M)) == len(SCORED), label
    assert "## SkullBreak" in md and "## SkullFix\n" in md
    assert "## SkullFix, generalisation (new defects on its test skulls)" in md
    for png in ("figure4.png", "figure3.png", "masking_examples.png"):
        assert (workflow_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resolved = yaml.safe_load((workflow_run / "config.yaml").read_text())
    assert resolved == yaml.safe_load(CONFIG.read_text())


@pytest.mark.slow
def test_table1_is_computed_from_the_per_case_files(workflow_run):
    table = pd.read_csv(workflow_run / "table1.csv")
    assert len(table) == len(SCORED) * len(METHODS)
    assert set(table["dataset"]) == set(SCORED)
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
    assert counts.pop("metrics") == str(len(SCORED) * len(METHODS))
    assert set(counts) <= {"table1", "figure4", "all", "total"}, counts
    assert "train_mae" not in out and "infer" not in out


@pytest.mark.slow
def test_generalisation_set_is_new_defects_on_test_skulls_scored_with_the_source_models(workflow_run):
    import json

    from skullrecon.io import read_volume

    root = workflow_run / "data" / "generalisation" / "skullfix"
    made = json.loads((root / "generation.json").read_text())
    source_tests = sorted(p.stem for p in (workflow_run / "data" / "skullfix" / "test_set" / "complete_skull").glob("*.nrrd"))
    # per_skull 1: each test skull gets one of the configured locations, in turn
    assert [(c["id"], c["location"]) for c in made["cases"]] == list(zip(source_tests, ["frontal", "bilateral"]))
    assert all("/test_set/" in c["source"] for c in made["cases"])
    for method in METHODS:
        scored = pd.read_csv(workflow_run / "metrics" / "skullfix_generalisation" / f"{method}.csv", dtype={"case": str})
        assert sorted(scored["case"]) == sorted(f"{c['location']}_{c['id']}" for c in made["cases"])
    for case in made["cases"]:
        truth = read_volume(root / "testing" / "implant" / case["location"] / f"{case['id']}.nrrd").array
        assert truth.sum() == case["implant_voxels"]
    # no model is trained on the new defects: the baselines are the source dataset's
    assert not list((workflow_run / "models").glob("*generalisation*"))
    summary = pd.read_csv(io.StringIO(snakemake("--detailed-summary").stdout), sep="\t", dtype=str)
    inputs = dict(zip(summary["output_file"], summary["input-file(s)"]))
    for method in METHODS:
        model = f"{method}.pt" if method.startswith("mae_") else f"{method}_skullfix.pt"
        assert inputs[f"results/{RUN}/predictions/skullfix_generalisation/{method}"].split(",")[0] == (
            f"results/{RUN}/models/{model}")


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
    assert counts["preprocess"] == "5"  # train and test of both, and the generalisation set's test cases
    assert counts["generalisation_dataset"] == "1"
    assert counts["train_mae"] == "2"
    assert counts["train_baseline"] == "10"
    for rule in ("infer", "upsample", "extract_implants", "metrics"):
        assert counts[rule] == "21", rule  # 7 methods on SkullBreak, SkullFix and skullfix_generalisation


def test_generalisation_of_an_unknown_dataset_is_a_clear_error(tmp_path):
    bad = yaml.safe_load(CONFIG.read_text())
    bad["generalisation"] = {"skullbreak": bad["generalisation"]["skullfix"]}
    del bad["datasets"]["skullbreak"]
    bad["mae"]["datasets"] = ["skullfix"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(path)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "generalisation.skullbreak: no dataset 'skullbreak' under datasets" in proc.stderr + proc.stdout


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
