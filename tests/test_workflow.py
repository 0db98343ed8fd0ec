"""The whole DAG through the snakemake command line, on a tiny synthetic config (a few minutes)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO
from skullrecon.io import read_volume

CONFIG = REPO / "tests" / "workflow" / "run.yaml"
RUN = yaml.safe_load(CONFIG.read_text())["run"]
RESULTS = REPO / "results" / RUN
METHODS = ["mae_d", "mae_nd", "unet", "unetr", "swinunetr", "attentionunet", "segresnet"]
# the second stage refines two first stages in this config: their "+ 2nd stage" rows beside the seven
REFINED = [f"{m}_refined" for m in yaml.safe_load(CONFIG.read_text())["refine"]["methods"]]
# and the surface stage follows two: their "+ surfaces" rows
SURFACED = [f"{m}_surface" for m in yaml.safe_load(CONFIG.read_text())["surface"]["methods"]]
ROWS = METHODS + REFINED + SURFACED
SCORED = ["skullbreak", "skullfix", "skullfix_generalisation"]  # the last: new defects on skullfix's test skulls
KINDS = yaml.safe_load(CONFIG.read_text())["datasets"]["skullbreak"]["layout"]["types"]  # its block split by these
BLOCKS = len(SCORED) + len(KINDS)  # Table I's blocks: a dataset each, and SkullBreak per kind
ONE_THREAD = ["preprocess", "train_mae", "train_baseline", "infer", "upsample", "metrics"]


def snakemake(*args: str, check: bool = True, configfile: Path = CONFIG) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # one thread per job, as the demo profile: two side by side keep both cores busy, where a job of 2
    # threads spends most of its few seconds importing torch and MONAI on one
    cmd = [sys.executable, "-m", "snakemake", "--configfile", str(configfile), "--cores", "2",
           "--set-threads", *(f"{rule}=1" for rule in ONE_THREAD), *args]
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
    md, _, paired = (workflow_run / "table1.md").read_text().partition("# MAE (D) against each method")
    for label in ["MAE (D)", "MAE (ND)", "UNet", "UNETR", "SwinUNETR", "AttentionUnet", "SegResNet"]:
        assert len(re.findall(rf"^\| {re.escape(label)} \|", md, flags=re.M)) == BLOCKS, label
        # beside it, MAE (D) minus each other method on every scored dataset and SkullBreak's every kind
        assert len(re.findall(rf"^\| {re.escape(label)} \|", paired, flags=re.M)) == (label != "MAE (D)") * BLOCKS
    # 6 methods against MAE (D); per second stage, 1 against the MAE (D) with it and 2 against their single stage;
    # x2 metrics
    assert len(pd.read_csv(workflow_run / "table1_paired.csv")) == BLOCKS * (6 + 2 * (1 + 2)) * 2
    for label in ["MAE (D) + 2nd stage", "UNet + 2nd stage", "MAE (D) + surfaces", "UNet + surfaces"]:
        assert len(re.findall(rf"^\| {re.escape(label)} \|", md, flags=re.M)) == BLOCKS, label
    assert "# Each method's second stage against its single stage" in paired
    assert "## SkullBreak" in md and "## SkullFix\n" in md
    assert all(f"### SkullBreak: {kind}" in md and f"### SkullBreak: {kind}" in paired for kind in KINDS)
    assert "## SkullFix, generalisation (new defects on its test skulls)" in md
    for png in ("figure4.png", "figure3.png", "masking_examples.png", "training_curves.png"):
        assert (workflow_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resolved = yaml.safe_load((workflow_run / "config.yaml").read_text())
    assert resolved == yaml.safe_load(CONFIG.read_text())
    env = json.loads((workflow_run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["snakemake"] and env["skullrecon"]


PLANNED = re.compile(r"^(\w+)\s+(\d+)$", flags=re.M)


def _plan_with(tmp_path: Path, config: dict) -> dict[str, int]:
    """The jobs `snakemake -n` plans against the finished run after its config became ``config``."""
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake("-n", "--quiet", "rules", configfile=path)
    return {rule: int(n) for rule, n in PLANNED.findall(proc.stdout) if rule != "total"}


def _edited(*keys, value):
    config = yaml.safe_load(CONFIG.read_text())
    section = config
    for key in keys[:-1]:
        section = section[key]
    section[keys[-1]] = value
    return config


@pytest.mark.slow
def test_postprocess_change_reruns_implants_not_training(workflow_run, tmp_path):
    closing = yaml.safe_load(CONFIG.read_text())["postprocess"]["closing_mm"]
    plan = _plan_with(tmp_path, _edited("postprocess", "closing_mm", value=closing + 1.0))
    n = len(SCORED) * len(ROWS)
    # the surface rows' implants are the surface rule's, which starts from the single-stage implants
    assert plan.get("extract_implants") == len(SCORED) * len(METHODS + REFINED) and plan.get("metrics") == n, plan
    assert plan.get("surface") == len(SCORED) * len(SURFACED), plan
    assert plan.get("bundle_model") == 12, plan  # the deliverable model files carry the new settings
    assert {"table1", "figure3", "figure4"} <= set(plan), plan
    assert not {"train_mae", "train_baseline", "infer", "upsample", "preprocess", "train_refiner", "refine"} & set(plan)


@pytest.mark.slow
def test_metrics_change_reruns_only_metrics_and_tables(workflow_run, tmp_path):
    plan = _plan_with(tmp_path, _edited("metrics", "boundary_margin_mm", value=12.5))
    assert plan.get("metrics") == len(SCORED) * len(ROWS), plan
    assert set(plan) <= {"metrics", "table1", "figure4", "resolved_config", "all"}, plan
    assert {"table1", "figure4"} <= set(plan), plan


@pytest.mark.slow
def test_training_change_reruns_that_training(workflow_run, tmp_path):
    lr = yaml.safe_load(CONFIG.read_text())["mae"]["train"]["lr"]
    plan = _plan_with(tmp_path, _edited("mae", "train", "lr", value=lr / 2))
    assert plan.get("train_mae") == 2 and "train_baseline" not in plan, plan
    assert plan.get("infer") == 6 and plan.get("refine") == 3, plan  # 2 variants x 3 scored datasets; MAE (D) refined
    assert plan.get("surface") == 3, plan  # and MAE (D) with the surface stage
    assert plan.get("metrics") == 12 and "train_refiner" not in plan, plan
    plan = _plan_with(tmp_path, _edited("baselines", "networks", "unet", "num_res_units", value=2))
    assert plan.get("train_baseline") == 2 and "train_mae" not in plan, plan  # UNet, on both datasets
    # a method's own epoch budget retrains that method only; the same budget as train.epochs retrains nothing
    epochs = yaml.safe_load(CONFIG.read_text())["baselines"]["train"]["epochs"]
    plan = _plan_with(tmp_path, _edited("baselines", "epochs_per_method", value={"unetr": epochs + 1}))
    assert plan.get("train_baseline") == 2 and "train_mae" not in plan, plan  # UNETR, on both datasets
    same = _plan_with(tmp_path, _edited("baselines", "epochs_per_method", value={"unetr": epochs}))
    assert set(same) <= {"resolved_config", "all"}, same  # only the record of the config itself


@pytest.mark.slow
def test_second_stage_change_retrains_no_first_stage(workflow_run, tmp_path):
    lr = yaml.safe_load(CONFIG.read_text())["refine"]["train"]["lr"]
    plan = _plan_with(tmp_path, _edited("refine", "train", "lr", value=lr / 2))
    assert plan.get("train_refiner") == 1 and plan.get("refine") == len(SCORED) * len(REFINED), plan
    assert plan.get("metrics") == len(SCORED) * len(REFINED), plan  # the refined rows only
    # the predictions it reads are kept where a second stage is configured: no inference, no upsampling again
    assert not {"train_mae", "train_baseline", "preprocess", "preprocess_fine", "infer", "upsample"} & set(plan), plan
    # refining one more first stage adds its rows and trains nothing
    methods = yaml.safe_load(CONFIG.read_text())["refine"]["methods"] + ["segresnet"]
    plan = _plan_with(tmp_path, _edited("refine", "methods", value=methods))
    assert plan.get("refine") == len(SCORED) and plan.get("metrics") == len(SCORED), plan
    assert not {"train_mae", "train_baseline", "train_refiner"} & set(plan), plan
    # learning from a first stage's outputs (here the run's own MAE (D)) retrains the second stage, not the first
    config = _edited("refine", "first_stage", value="results/test-workflow/networks/mae_d.pt")
    plan = _plan_with(tmp_path, config)
    assert plan.get("train_refiner") == 1 and plan.get("refine") == len(SCORED) * len(REFINED), plan
    assert not {"train_mae", "train_baseline", "infer", "upsample"} & set(plan), plan
    # without the section: the paper's single stage, nothing to do for the rows that stay
    config = yaml.safe_load(CONFIG.read_text())
    del config["refine"]
    plan = _plan_with(tmp_path, config)
    assert not {"train_mae", "train_baseline", "infer", "upsample", "metrics", "refine"} & set(plan), plan


@pytest.mark.slow
def test_the_surface_stage_fills_with_a_shape_model_of_the_healthy_training_skulls(workflow_run):
    from skullrecon.shape_model import ShapeModel

    for dataset, skulls in (("skullfix", 4), ("skullbreak", 3)):  # n_train of each synthetic dataset
        model = ShapeModel.load(workflow_run / "networks" / f"shape_model_{dataset}.npz")
        assert len(model.skulls) == skulls and len(model.modes) == skulls - 1, (dataset, model.skulls)


@pytest.mark.slow
def test_surface_stage_change_reruns_only_its_rows(workflow_run, tmp_path):
    plan = _plan_with(tmp_path, _edited("surface", "weight", value=1.0))
    assert plan.get("surface") == len(SCORED) * len(SURFACED), plan
    assert plan.get("metrics") == len(SCORED) * len(SURFACED), plan  # the surface rows only
    assert set(plan) <= {"surface", "metrics", "table1", "figure4", "resolved_config", "all"}, plan
    methods = yaml.safe_load(CONFIG.read_text())["surface"]["methods"] + ["segresnet"]
    plan = _plan_with(tmp_path, _edited("surface", "methods", value=methods))
    assert plan.get("surface") == len(SCORED) and plan.get("metrics") == len(SCORED), plan
    config = yaml.safe_load(CONFIG.read_text())
    del config["surface"]
    plan = _plan_with(tmp_path, config)
    assert not {"surface", "metrics", "extract_implants", "infer"} & set(plan), plan


def _reordered(value):
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in sorted(value, reverse=True)}
    return [_reordered(v) for v in value] if isinstance(value, list) else value


@pytest.mark.slow
def test_reordered_config_plans_nothing(workflow_run, tmp_path):
    config = yaml.safe_load(CONFIG.read_text())
    for variant in (_reordered(config), json.loads(json.dumps(config, sort_keys=True))):
        assert _plan_with(tmp_path, variant) == {}, variant


@pytest.mark.slow
def test_model_files_carry_training_and_postprocess_settings(workflow_run, tmp_path):
    """Networks hold what training determined; models/ adds post-processing for `skullrecon reconstruct`."""
    from skullrecon.infer import reconstruct_file

    config = yaml.safe_load(CONFIG.read_text())
    network = torch.load(workflow_run / "networks" / "mae_d.pt", weights_only=True)["spec"]
    model = torch.load(workflow_run / "models" / "mae_d.pt", weights_only=True)["spec"]
    assert "postprocess" not in network
    assert model == {**network, "postprocess": config["postprocess"]}
    assert network["train"]["lr"] == config["mae"]["train"]["lr"] and network["grid"] == config["preprocess"]["grid"]
    cases = pd.read_csv(workflow_run / "preprocessed" / "skullfix" / "test" / "cases.tsv", sep="\t", dtype=str)
    with pytest.raises(ValueError, match="post-processing"):
        reconstruct_file(cases.defective[0], workflow_run / "networks" / "mae_d.pt", tmp_path / "unused",
                         device="cpu")
    out = reconstruct_file(cases.defective[0], workflow_run / "models" / "mae_d.pt", tmp_path / "cli",
                           device="cpu", stl=False)
    cli = read_volume(out["paths"]["implant"]).array.astype(bool)
    pipeline = read_volume(workflow_run / "implants" / "skullfix" / "mae_d" / f"{cases.name[0]}.nrrd").array
    # the same implant; the pipeline stores grid probabilities as float16, so a few voxels may flip
    assert (cli ^ pipeline.astype(bool)).sum() <= 0.01 * max(1, (cli | pipeline.astype(bool)).sum())


@pytest.mark.slow
def test_benchmarks_and_temporary_predictions(workflow_run):
    for kind, n in (("train", 12 + 1), ("infer", len(SCORED) * len(METHODS))):  # + the second stage
        files = sorted((workflow_run / "benchmarks" / kind).glob("*.tsv"))
        assert len(files) == n, files
        assert pd.read_csv(files[0], sep="\t")["s"].iloc[0] > 0
    # temporary, but kept where a second stage reads them (this config refines two first stages)
    assert len(list((workflow_run / "predictions").glob("*/*"))) == len(SCORED) * len(METHODS)
    # kept for re-post-processing (the surface rows have none: they start from the implants)
    assert len(list((workflow_run / "upsampled").glob("*/*"))) == len(SCORED) * len(METHODS + REFINED)


@pytest.mark.slow
def test_table1_is_computed_from_the_per_case_files(workflow_run):
    table = pd.read_csv(workflow_run / "table1.csv", keep_default_na=False)
    assert len(table) == BLOCKS * len(ROWS)
    assert set(table["dataset"]) == set(SCORED)
    assert set(table.loc[table["defect_type"] != "", "dataset"]) == {"skullbreak"}
    for row in table.itertuples():
        cases = pd.read_csv(workflow_run / "metrics" / row.dataset / f"{row.method}.csv", keep_default_na=False)
        if row.defect_type:
            cases = cases[cases["defect_type"] == row.defect_type]
        assert row.cases == len(cases)
        assert row.failed == int(cases["empty_prediction"].sum())
        assert np.isclose(row.dsc_mean, cases["dsc"].mean(), atol=1e-4)
        assert np.isclose(row.bdsc_median, cases["bdsc"].median(), atol=1e-4)


@pytest.mark.slow
def test_implants_are_on_the_original_grid(workflow_run):
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
    assert counts.pop("metrics") == str(len(SCORED) * len(ROWS))
    assert set(counts) <= {"table1", "figure4", "all", "total"}, counts
    assert not {"train_mae", "train_baseline", "infer"} & set(counts)  # the plan's table (the output echoes the command)


@pytest.mark.slow
def test_generalisation_set_is_new_defects_on_test_skulls_scored_with_the_source_models(workflow_run):
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
    assert not list((workflow_run / "networks").glob("*generalisation*"))
    assert not list((workflow_run / "models").glob("*generalisation*"))
    for method in METHODS:
        network = f"{method}.pt" if method.startswith("mae_") else f"{method}_skullfix.pt"
        plan = snakemake("-n", "--forceall", f"results/{RUN}/metrics/skullfix_generalisation/{method}.csv").stdout
        infer = plan.split("rule infer:", 1)[1].split("\n\n", 1)[0]
        assert f"input: results/{RUN}/networks/{network}, results/{RUN}/preprocessed/skullfix_generalisation/test" in infer


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


def _planned(*args: str) -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--quiet", "rules", *args], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M)}


def test_realdata_dag_has_the_skullbreaklike_block():
    """The realdata run trains each baseline on SkullFix and on the SkullBreak-like set (five kinds cut into the
    same skulls), one MAE for both, and scores 7 methods on 3 datasets, with and without the second stage; its block
    on its own
    (realdata/run-skullbreaklike.yaml) takes the MAE from its release and trains only the five-kind baselines."""
    whole = _planned("--profile", "realdata")
    assert whole["skullbreaklike_dataset"] == 1 and whole["train_mae"] == 2 and whole["train_baseline"] == 10
    assert "released_mae" not in whole
    # and the second stage (issue 37): one network, every method's rows refined beside its single-stage ones
    assert whole["train_refiner"] == 1 and whole["refine"] == 21 and whole["metrics"] == 3 * 21
    assert whole["surface"] == 21  # and the surface stage (no network) after every one
    assert whole["shape_model"] == 2  # with a shape model of each trained dataset's healthy skulls
    block = _planned("--profile", "realdata", "--configfile", "realdata/run-skullbreaklike.yaml")
    assert block["released_mae"] == 2 and "train_mae" not in block and block["train_baseline"] == 5
    assert block["metrics"] == 7 and "generalisation_dataset" not in block
    assert block["preprocess"] == 3  # the block's train and test splits, and SkullFix's train for the mask figure
    jobs = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--profile", "realdata", "--configfile",
                           "realdata/run-skullbreaklike.yaml"], cwd=REPO, capture_output=True, text=True).stdout
    assert set(re.findall(r"networks/(\w+)\.pt", jobs)) == {"mae_d", "mae_nd"} | {
        f"{m}_skullbreaklike" for m in ("unet", "unetr", "swinunetr", "attentionunet", "segresnet")}


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


@pytest.mark.slow
def test_report_holds_tables_figures_curves_metrics_and_provenance(workflow_run, tmp_path):
    """`snakemake --report` of the run: everything a reader needs, in one archive."""
    import zipfile

    snakemake("--report", str(tmp_path / "report.zip"))
    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    files = {Path(n).name for n in names}
    for name in ("table1.csv", "table1.md", "figure3.png", "figure4.png", "masking_examples.png",
                 "training_curves.png", "config.yaml", "env.json"):
        assert name in files, (name, sorted(files))
    per_case = [n for n in names if Path(n).name in {f"{m}.csv" for m in ROWS}]
    assert len(per_case) == len(SCORED) * len(ROWS), per_case  # every method (and second stage) on every dataset
    html = next(zipfile.ZipFile(tmp_path / "report.zip").read(n) for n in names if n.endswith("report.html"))
    for category in (b"Table I", b"Figures", b"Per-case metrics", b"Run", b"skullbreak", b"skullfix"):
        assert category in html, category


def _in_case_order(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(["case", "defect_type"]).reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.parametrize("dataset,method", [("skullfix", "mae_d"), ("skullbreak", "unet"),
                                            ("skullfix_generalisation", "segresnet")])
def test_evaluate_and_release_reproduce_the_runs_metrics(workflow_run, tmp_path, dataset, method):
    """`skullrecon evaluate` of a run's model on its test cases writes the run's per-case metrics exactly,
    and `skullrecon release` puts the run's Table I row into the card."""
    from skullrecon.evaluate import evaluate_model
    from skullrecon.release import release_from_run

    source = dataset.removesuffix("_generalisation")
    model = workflow_run / "models" / (f"{method}.pt" if method.startswith("mae_") else f"{method}_{source}.pt")
    cases = pd.read_csv(workflow_run / "preprocessed" / dataset / "test" / "cases.tsv", sep="\t", dtype=str)
    split = next(p.parent for p in Path(cases.defective[0]).parents if p.name == "defective_skull")
    table = evaluate_model(model, None, split, ids=sorted(set(cases.case_id)), workers=2, progress=False)
    run = pd.read_csv(workflow_run / "metrics" / dataset / f"{method}.csv", dtype={"case": str, "defect_type": str})
    run["defect_type"] = run["defect_type"].fillna("")
    # the run lists defect types in the config's order, evaluate finds them in the folder alphabetically
    pd.testing.assert_frame_equal(_in_case_order(table), _in_case_order(run.drop(columns="scored_on")),
                                  check_exact=True)
    if dataset == "skullfix_generalisation":
        return
    card = json.loads(release_from_run(workflow_run, method, dataset=dataset, out=tmp_path).read_text())
    table = pd.read_csv(workflow_run / "table1.csv", keep_default_na=False)
    row = table[table["defect_type"] == ""].set_index(["dataset", "method"]).loc[(dataset, method)]
    assert card["metrics"]["test"]["dsc_mean"] == pytest.approx(row["dsc_mean"], abs=1e-4)  # table1 rounds
    released = tmp_path / card["file"]  # the run's file plus a TorchScript copy of its network
    assert card["sha256"] == hashlib.sha256(released.read_bytes()).hexdigest()
    ours, theirs = (torch.load(f, weights_only=True)["state_dict"] for f in (released, model))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert card["training"]["commit"] == json.loads((workflow_run / "env.json").read_text())["git_commit"]
