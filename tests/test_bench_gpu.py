"""bench/gpu.py, the GPU check of the paper run, runs on the CPU at a tiny grid so it cannot rot.

One network (the MAE's UNet at 32^3), one timed step, a two-case loader in the main process: a
few seconds. On a GPU machine the same script runs at the paper's 256^3 (see its docstring).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def test_gpu_check_runs_on_the_cpu_at_a_tiny_grid():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--device", "cpu", "--grid", "32", "--networks", "mae",
         "--warmup", "0", "--repeats", "1", "--loader-cases", "2", "--num-workers", "0"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    card = re.match(r"\[(CPU [^\]]+)\] ", lines[0])
    assert card, lines[0]
    assert all(line.startswith(f"[{card.group(1)}] ") for line in lines)  # the card on every line
    text = proc.stdout
    step = re.search(r"mae +step +([\d.]+) ms .* loss finite True", text)
    assert step and float(step.group(1)) > 0, text
    assert re.search(r"mae +inference forward +[\d.]+ ms per case", text), text
    rates = re.search(r"MAE \(load \+ mask\) ([\d.]+) cases/s, baseline \(load\) ([\d.]+) cases/s", text)
    assert rates and float(rates.group(1)) > 0 and float(rates.group(2)) > 0, text
    assert re.search(r"mae +steps/s +[\d.]+ vs loader", text)
    # both MAE trainings projected against the profile's limit, and said not to be the paper grid
    projected = re.findall(r"train_mae +(mae_\w+) +1200 epochs x +\d+ cases: +([\d.]+) CPU h -> (\d+) attempt", text)
    assert [m for m, _, _ in projected] == ["mae_d", "mae_nd"]
    assert "NOT the paper grid" in text


def test_each_network_runs_in_its_own_process_and_a_failure_is_a_row(tmp_path):
    """A network that cannot be built (here a bad argument; on a GPU an out-of-memory) is reported
    as its row, and the next network is still measured, with the MAE's device-threshold inference."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["baselines"]["networks"]["segresnet"] = {"not_an_argument": 1}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--config", str(tmp_path / "run.yaml"), "--device", "cpu",
         "--grid", "32", "--networks", "segresnet", "mae", "--warmup", "0", "--repeats", "1", "--loader-cases", "2",
         "--num-workers", "0"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert re.search(r"segresnet +step: FAILED at 32\^3 \(exit 1: TypeError: .*not_an_argument", text), text
    assert re.search(r"mae +step +[\d.]+ ms .* loss finite True", text), text
    assert re.search(r"mae +inference, threshold on the device, uint8 back +[\d.]+ ms per case", text), text
    assert re.search(r"host share per case at 32\^3: input float32 [\d.]+ ms vs uint8", text), text
    assert "segresnet_skullbreak" not in text  # no projection without a measurement


def test_the_network_budget_bounds_the_run():
    """A child gets at most what is left of the budget (here 8 s; it is asked for 100,000 steps at
    64^3, which no CPU does in 8 s: a TIMEOUT row), and past the budget a network is not started but reported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--device", "cpu", "--grid", "64", "--networks", "mae",
         "unet", "--budget", "8", "--repeats", "100000", "--loader-cases", "2", "--num-workers", "0"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"mae +step: FAILED at 64\^3 \(TIMEOUT after 8 s\)", proc.stdout), proc.stdout
    assert re.search(r"unet +step: NOT RUN \(the 8 s budget is spent\)", proc.stdout), proc.stdout


def test_every_training_of_the_paper_run_is_projected():
    from gpu import trainings

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    jobs = trainings(cfg)
    assert len(jobs) == 2 + 2 * len(cfg["baselines"]["methods"]) == 12
    by_method = {j["method"]: j for j in jobs}
    # the MAE trains on the healthy skulls of both datasets, less SkullFix's held-out test ids
    assert by_method["mae_d"]["cases"] == 114 + 100 - len(cfg["datasets"]["skullfix"]["layout"]["test_ids"])
    assert by_method["unet_skullbreak"]["cases"] == 570
    assert by_method["unet_skullfix"]["cases"] == 100 - 20


def test_projection_limits_are_what_the_training_rules_declare(tmp_path):
    """The train rules declare runtime and retries (the SLURM profile does not): the projection
    must read them there, and a profile that sets its own wins, as in Snakemake."""
    from gpu import slurm_limits

    limits = slurm_limits(REPO / "slurm" / "config.yaml")
    rules = (REPO / "workflow" / "rules" / "train.smk").read_text()
    for rule in ("train_mae", "train_baseline"):
        body = rules.split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0]
        retries = int(re.search(r"retries: (\d+)", body).group(1))
        minutes = eval(re.search(r"runtime=([\d *]+),", body).group(1))  # the rule's own arithmetic, digits only
        assert limits["retries"][rule] == retries and limits["runtime_h"][rule] == minutes / 60
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    profile["set-resources"]["train_mae"]["runtime"] = 120
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(profile))
    assert slurm_limits(tmp_path / "config.yaml")["runtime_h"] == {"train_mae": 2.0, "train_baseline": limits["runtime_h"]["train_baseline"]}
