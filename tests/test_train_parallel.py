"""realdata/train_parallel.py: every training job of a config side by side, epochs fitted to a budget,
stopped at a deadline and run again to the same networks as an uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "realdata"))
TINY = {"channels": [4, 8], "strides": [2], "num_res_units": 0, "norm": "instance"}


def test_fitted_epochs_scale_every_section_by_one_factor():
    from train_parallel import fitted_epochs

    cfg = yaml.safe_load((REPO / "realdata" / "run-gpu.yaml").read_text())
    cfg["mae"]["train"]["epochs"], cfg["baselines"]["train"]["epochs"] = 500, 200
    # the slowest job, a baseline: 200 x 2.0 s = 400 s; a 100 s budget scales everything by 1/4
    speeds = {"mae_d": 0.5, "mae_nd": 0.5, "unet_skullfix": 1.0, "swinunetr_skullfix": 2.0}
    assert fitted_epochs(cfg, speeds, 100) == {"mae": 120, "baselines": 50}
    # the MAE the slowest: 500 x 1.0 s; a budget over every job's need changes nothing
    assert fitted_epochs(cfg, {"mae_d": 1.0, "unet_skullfix": 1.0}, 250) == {"mae": 250, "baselines": 100}
    assert fitted_epochs(cfg, speeds, 10_000) == {"mae": 500, "baselines": 200}
    assert fitted_epochs(cfg, speeds, 1) == {"mae": 10, "baselines": 10}  # never below 10


def _run(cwd: Path, config: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "realdata" / "train_parallel.py"), "--config", str(config),
                           "--threads", "1", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    return proc.stdout + proc.stderr


def test_jobs_write_the_rules_outputs_and_resume_after_the_deadline(tmp_path, synthetic_root):
    from skullrecon.datasets import Layout
    from skullrecon.preprocess import preprocess_split

    cfg = yaml.safe_load((REPO / "realdata" / "run-gpu.yaml").read_text())
    cfg.update(run="tiny", device="cpu")
    cfg["preprocess"]["grid"] = 16
    cfg["mae"]["network"] = cfg["baselines"]["networks"]["unet"] = TINY
    cfg["baselines"]["methods"] = ["unet"]
    for section, epochs in (("mae", 6), ("baselines", 4)):
        cfg[section]["train"].update(epochs=epochs, checkpoint_every=2, num_workers=0, val_fraction=0.25)
    preprocess_split(synthetic_root, Layout("training_set", "test_set", None, ()), "train",
                     tmp_path / "results" / "tiny" / "preprocessed" / "skullfix" / "train", grid=16, log=lambda s: None)
    runs = {}
    for name, deadlines in (("straight", [None]), ("stopped", [0, None])):
        work = tmp_path / name
        pre = work / "results" / "tiny" / "preprocessed"
        pre.parent.mkdir(parents=True)
        pre.symlink_to(tmp_path / "results" / "tiny" / "preprocessed", target_is_directory=True)
        config = work / "run.yaml"
        config.write_text(yaml.safe_dump(cfg))
        for deadline in deadlines:
            out = _run(work, config, *(["--deadline", str(deadline)] if deadline is not None else []))
            if deadline is not None:  # every job stopped, nothing written as if finished
                assert out.count("stopped at deadline") == 3, out
                assert not list((work / "results" / "tiny").glob("networks/*.pt")), out
        runs[name] = work / "results" / "tiny"
        assert out.count(" done ") == 3, out
    for run in runs.values():
        for job, epochs in (("mae_d", 6), ("mae_nd", 6), ("unet_skullfix", 4)):
            assert (run / "networks" / f"{job}.pt").is_file() and (run / "logs" / "train" / f"{job}.log").is_file()
            assert len((run / "training" / f"{job}.csv").read_text().splitlines()) == 1 + epochs
    for job in ("mae_d", "unet_skullfix"):  # the restarted run trained the same networks
        a = torch.load(runs["straight"] / "networks" / f"{job}.pt", map_location="cpu", weights_only=True)
        b = torch.load(runs["stopped"] / "networks" / f"{job}.pt", map_location="cpu", weights_only=True)
        state_a, state_b = a["state_dict"], b["state_dict"]
        assert state_a.keys() == state_b.keys()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a), job


def test_a_methods_own_epoch_budget_reaches_its_job_only():
    from train_parallel import jobs_of

    cfg = yaml.safe_load((REPO / "realdata" / "run-gpu.yaml").read_text())
    cfg["baselines"]["epochs_per_method"] = {"unetr": 7}
    jobs = jobs_of(cfg)
    assert jobs["unetr_skullfix"]["train"]["epochs"] == 7
    others = {n: j["train"]["epochs"] for n, j in jobs.items() if n.endswith("_skullfix") and n != "unetr_skullfix"}
    assert set(others.values()) == {cfg["baselines"]["train"]["epochs"]}, others
    assert {jobs[m]["train"]["epochs"] for m in ("mae_d", "mae_nd")} == {cfg["mae"]["train"]["epochs"]}
