"""gpu/fit_epochs.py: a run's epochs fitted to a machine by a probe that is the workflow's own training."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "gpu"))


def test_fitted_epochs_scale_every_section_by_one_factor():
    from fit_epochs import fitted_epochs

    cfg = yaml.safe_load((REPO / "realdata" / "run-gpu.yaml").read_text())
    cfg["mae"]["train"]["epochs"], cfg["baselines"]["train"]["epochs"] = 500, 200
    # the slowest job, a baseline: 200 x 2.0 s = 400 s; a 100 s budget scales everything by 1/4
    speeds = {"mae_d": 0.5, "mae_nd": 0.5, "unet_skullfix": 1.0, "swinunetr_skullfix": 2.0}
    assert fitted_epochs(cfg, speeds, 100) == {"mae": 120, "baselines": 50}
    # the MAE the slowest: 500 x 1.0 s; a budget over every job's need changes nothing
    assert fitted_epochs(cfg, {"mae_d": 1.0, "unet_skullfix": 1.0}, 250) == {"mae": 250, "baselines": 100}
    assert fitted_epochs(cfg, speeds, 10_000) == {"mae": 500, "baselines": 200}
    assert fitted_epochs(cfg, speeds, 1) == {"mae": 10, "baselines": 10}  # never below 10
    cfg["baselines"]["train"]["epochs"] = 4
    assert fitted_epochs(cfg, speeds, 10_000)["baselines"] == 4  # nor above the config's


def tiny_run(run: str, **epochs: int) -> dict:
    """tests/workflow/run.yaml cut to SkullFix-like cases, the MAE (D) and (ND), the UNet and AttentionUnet baselines."""
    cfg = yaml.safe_load((REPO / "tests" / "workflow" / "run.yaml").read_text())
    cfg["run"] = run
    del cfg["datasets"]["skullbreak"], cfg["generalisation"]
    cfg["mae"]["datasets"] = ["skullfix"]
    cfg["baselines"]["methods"] = ["unet", "attentionunet"]
    cfg["baselines"]["networks"] = {m: cfg["baselines"]["networks"][m] for m in cfg["baselines"]["methods"]}
    for section, n in epochs.items():
        cfg[section]["train"]["epochs"] = n
    return cfg


def env() -> dict:
    """The jobs import this checkout's library, wherever they run."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
            "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
def test_probe_trains_the_rules_jobs_apart_from_the_run_and_its_epochs_reach_the_run(tmp_path):
    cfg = tiny_run("fit", mae=20, baselines=10)
    cfg["mae"]["variants"], cfg["baselines"]["methods"] = ["d"], ["unet"]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, str(REPO / "gpu" / "fit_epochs.py"), "--configfile", "run.yaml",
                           "--budget", "1e9", "--probe-epochs", "2", "--", "--cores", "2"],
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    # both training rules ran, as jobs of the probe's own run, two epochs each
    assert "localrule train_mae:" in out and "localrule train_baseline:" in out, out[-6000:]
    assert "probe: mae_d " in out and "probe: unet_skullfix " in out, out[-3000:]
    results = tmp_path / "results"
    assert sorted(p.name for p in results.iterdir()) == ["fit"]  # the probe's folder is gone
    assert (results / "fit" / "preprocessed" / "skullfix" / "train").is_dir()  # made for the run, read by the probe
    assert not (results / "fit" / "networks").exists() and not (results / "fit" / "training").exists()
    fitted = yaml.safe_load((results / "fit" / "fitted_epochs.yaml").read_text())
    assert fitted == {"mae": {"train": {"epochs": 20}}, "baselines": {"train": {"epochs": 10}}}  # all fit 1e9 s

    # given after the run's config, the fitted counts replace its epochs and nothing else
    (tmp_path / "fitted.yaml").write_text(yaml.safe_dump({"mae": {"train": {"epochs": 30}}}))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--cores", "1",
                           "results/fit/config.yaml", "--configfile", "run.yaml", "fitted.yaml"],
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = yaml.safe_load((results / "fit" / "config.yaml").read_text())
    assert resolved["mae"]["train"] == {**cfg["mae"]["train"], "epochs": 30}
    assert resolved["baselines"] == cfg["baselines"]
