"""bench/cpu_time.py, the CPU-time projection of a run's trainings, at a tiny grid so it cannot rot."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def test_every_training_job_of_the_realdata_run_is_projected():
    import cpu_time

    cfg = yaml.safe_load((REPO / "realdata" / "run.yaml").read_text())
    jobs = {j["name"]: j for j in cpu_time.jobs(cfg)}
    baselines = ("unet", "unetr", "swinunetr", "attentionunet", "segresnet")
    assert set(jobs) == {"mae_d", "mae_nd"} | {f"{m}_{d}" for m in baselines for d in ("skullfix", "skullbreaklike")}
    assert jobs["swinunetr_skullfix"]["train"]["epochs"] == 20 and jobs["unet_skullfix"]["train"]["epochs"] == 30
    five_kind = cfg["baselines"]["epochs_per_dataset"]["skullbreaklike"]  # the dataset's own epochs, not the 30 above
    assert five_kind["swinunetr"] != 20 and five_kind["unet"] != 30
    assert jobs["swinunetr_skullbreaklike"]["train"]["epochs"] == five_kind["swinunetr"]
    assert jobs["unet_skullbreaklike"]["train"]["epochs"] == five_kind["unet"]
    assert jobs["unet_skullbreaklike"]["per_skull"] == 5
    assert jobs["mae_d"]["loss"] == cfg["mae"]["loss"] and jobs["unet_skullfix"]["loss"] is None  # the MAE's own loss
    assert jobs["mae_d"]["network"] == jobs["unet_skullfix"]["network"]


def test_cpu_time_projects_jobs_at_a_tiny_grid(capsys):
    import cpu_time

    assert cpu_time.main(["--config", str(REPO / "realdata" / "run.yaml"), "--grid", "32", "--steps", "1",
                          "--cases", "10", "--only", "mae_d", "unet_skullfix"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^(\w+) +(\d+) epochs +step +([\d.]+) CPU-s +epoch +([\d.]+) +job +(\d+) CPU-s", out, re.M)
    assert [r[0] for r in rows] == ["mae_d", "unet_skullfix"] and [int(r[1]) for r in rows] == [150, 30]
    for _, epochs, step, epoch, job in rows:
        # 9 training cases (one held out for validation): the MAE 5 steps of 2, a baseline 9 of 1
        assert float(step) > 0 and float(epoch) >= float(step)
        assert abs(int(job) - int(epochs) * float(epoch)) <= int(epochs) * 0.05 + 1  # the epoch printed to 0.1
    total = re.search(r"trainings: ([\d,]+) CPU-s; on 2 cores at least ([\d.]+) h", out)
    assert total, out
    assert abs(int(total.group(1).replace(",", "")) - sum(int(r[4]) for r in rows)) <= 2


def test_the_skullbreaklike_block_projects_five_kind_baselines_and_no_released_mae():
    """realdata/run-skullbreaklike.yaml trains the baselines on five pairs a skull, with their own epochs there,
    and takes the MAE from its release: no MAE job is projected."""
    import cpu_time

    cfg = yaml.safe_load((REPO / "realdata" / "run-skullbreaklike.yaml").read_text())
    jobs = {j["name"]: j for j in cpu_time.jobs(cfg)}
    assert set(jobs) == {"unet", "unetr", "swinunetr", "attentionunet", "segresnet"}
    five_kind = cfg["baselines"]["epochs_per_dataset"]["skullbreaklike"]
    assert five_kind["unet"] != cfg["baselines"]["train"]["epochs"]  # so the check below tells them apart
    assert jobs["unet"]["per_skull"] == 5 and jobs["unet"]["train"]["epochs"] == five_kind["unet"]
    assert jobs["swinunetr"]["train"]["epochs"] == five_kind["swinunetr"]
    both = dict(cfg, scored_datasets=None, mae={**cfg["mae"], "released": {}})
    names = [j["name"] for j in cpu_time.jobs(both)]
    assert names[:2] == ["mae_d", "mae_nd"] and "unet_skullfix" in names and "unet_skullbreaklike" in names
