"""Train every network of a run config side by side on one GPU, as the pipeline's train rules would.

For a lent GPU machine without Snakemake: each training job (``train_mae`` per variant, ``train_baseline``
per method and dataset) runs :func:`skullrecon.train.train_run` with the arguments its rule passes and
writes the rule's outputs (``networks/``, ``training/``, ``checkpoints/``, ``logs/train/``) under the run's
results folder. Copy them back and Snakemake continues from there (inference, metrics, Table I); the
small networks of a 64^3 run leave one GPU mostly idle, so seven side by side take little longer than one.

    python realdata/train_parallel.py --config realdata/run-gpu.yaml --deadline 480

With ``--budget`` the epochs are fitted to the machine before training: every job first runs a few
epochs side by side (a probe, in a scratch folder), and all epoch counts are scaled down by one factor (the
config's ratios kept, multiples of 10) so that the slowest job fits the budget; the counts used are printed
and written to ``results/<run>/train_epochs.yaml``, to be put into the config (a method's own
``baselines.epochs_per_method`` is not scaled). At ``--deadline`` seconds every
job still running is stopped; its checkpoint (every ``checkpoint_every`` epochs) lets the same command resume
it. Prints one line per job: state, epochs done, last validation.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def jobs_of(cfg: dict) -> dict[str, dict]:
    """Every training job of the config: name -> the keyword arguments of ``train_run``."""
    from skullrecon.settings import baseline_train

    results = f"results/{cfg['run']}"
    pre = {"grid": cfg["preprocess"]["grid"], "margin": cfg["preprocess"]["margin"], "device": cfg["device"]}
    jobs = {}
    mae = cfg["mae"]
    for variant in cfg["mae"]["variants"]:
        name = f"mae_{variant}"
        jobs[name] = dict(task="reconstruct", method=name, arch=mae["arch"], network=mae["network"],
                          train=mae["train"], masking=mae["masking"], augment=mae.get("augment"),
                          loss=mae.get("loss"),
                          input_dirs=[f"{results}/preprocessed/{d}/train" for d in cfg["mae"]["datasets"]], **pre)
    for method in cfg["baselines"]["methods"]:
        for dataset in cfg["datasets"]:
            jobs[f"{method}_{dataset}"] = dict(
                task="implant", method=method, arch=method,
                network=cfg["baselines"]["networks"].get(method, {}),
                train=baseline_train(cfg, method),
                input_dirs=[f"{results}/preprocessed/{dataset}/train"], **pre)
    for name, kw in jobs.items():
        kw.update(model_path=f"{results}/networks/{name}.pt", history_path=f"{results}/training/{name}.csv",
                  checkpoint_dir=f"{results}/checkpoints/{name}")
    return jobs


def run_one(cfg: dict, name: str, threads: int, probe: Path | None = None) -> None:
    import torch

    from skullrecon.train import train_run

    torch.set_num_threads(threads)
    kw = jobs_of(cfg)[name]
    if probe is not None:  # a few epochs in a scratch folder, only to time them
        kw.update(train=dict(kw["train"], epochs=PROBE_EPOCHS), model_path=probe / f"{name}.pt",
                  history_path=probe / f"{name}.csv", checkpoint_dir=probe / name)
    for out in (kw["model_path"], kw["history_path"]):  # as Snakemake makes its outputs' folders
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    train_run(**kw)


PROBE_EPOCHS = 4


def fitted_epochs(cfg: dict, seconds_per_epoch: dict[str, float], budget: float) -> dict[str, int]:
    """Epochs per section (mae, baselines) scaled by one factor so that the slowest job fits ``budget``."""
    planned = {"mae": cfg["mae"]["train"]["epochs"], "baselines": cfg["baselines"]["train"]["epochs"]}
    section = {name: "mae" if name.startswith("mae_") else "baselines" for name in seconds_per_epoch}
    longest = max(planned[section[n]] * s for n, s in seconds_per_epoch.items())
    scale = min(1.0, budget / longest)
    return {k: max(10, int(v * scale) // 10 * 10) for k, v in planned.items()}


def launch(args, names: list[str], logs: Path, probe: Path | None = None) -> dict[str, subprocess.Popen]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    procs = {}
    for name in names:
        extra = ["--probe", str(probe)] if probe is not None else []
        log_path = probe / f"{name}.log" if probe is not None else logs / f"{name}.log"
        with log_path.open("a") as log:
            procs[name] = subprocess.Popen(
                [sys.executable, __file__, "--config", str(args.config), "--run-one", name,
                 "--threads", str(args.threads), *extra],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return procs


def probe_speeds(args, cfg: dict, names: list[str], logs: Path) -> dict[str, float]:
    """Median seconds per epoch of every job, all running side by side (the first epoch left out)."""
    probe = Path(tempfile.mkdtemp(prefix="train-probe-"))
    procs = launch(args, names, logs, probe)
    speeds = {}
    for name, p in procs.items():
        if p.wait() != 0:
            sys.exit(f"probe of {name} failed (exit {p.returncode}): {(probe / f'{name}.log').read_text()[-3000:]}")
        rows = list(csv.DictReader((probe / f"{name}.csv").open()))
        speeds[name] = statistics.median(float(r["seconds"]) for r in rows[1:])
    shutil.rmtree(probe, ignore_errors=True)
    return speeds


def progress(cfg: dict, name: str) -> tuple[int, str]:
    """Epochs logged so far and the last validation score (from the checkpoint's or the final history)."""
    results = Path("results") / cfg["run"]
    for path in (results / "training" / f"{name}.csv", *sorted((results / "checkpoints" / name).glob("*.csv"))):
        if path.exists():
            rows = list(csv.DictReader(path.open()))
            if rows:
                last = rows[-1]
                val = {k: v for k, v in last.items() if k.startswith("val")}
                return len(rows), " ".join(f"{k}={float(v):.3f}" for k, v in val.items() if v)
    return 0, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True, help="run config (e.g. realdata/run-gpu.yaml)")
    ap.add_argument("--jobs", nargs="+", default=None, help="only these jobs (default: every one)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per job")
    ap.add_argument("--deadline", type=float, default=None, help="stop jobs still running after this many seconds")
    ap.add_argument("--budget", type=float, default=None,
                    help="fit the epochs so that the slowest job takes about this many seconds (a probe first)")
    ap.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    results = Path("results") / cfg["run"]
    fitted = results / "train_epochs.yaml"
    if fitted.exists():  # a resumed run keeps the epochs it was fitted to
        for section, epochs in yaml.safe_load(fitted.read_text()).items():
            cfg[section]["train"]["epochs"] = epochs
    if args.run_one:
        run_one(cfg, args.run_one, args.threads, args.probe)
        return 0
    names = args.jobs or list(jobs_of(cfg))
    logs = results / "logs" / "train"
    logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.budget is not None and not fitted.exists():
        speeds = probe_speeds(args, cfg, names, logs)
        epochs = fitted_epochs(cfg, speeds, args.budget)
        for name, s in speeds.items():
            print(f"probe: {name:28s} {s:6.2f} s per epoch side by side", flush=True)
        print(f"probe took {time.perf_counter() - start:.0f} s; epochs fitted to {args.budget:.0f} s: {epochs}", flush=True)
        fitted.write_text(yaml.safe_dump(epochs))
        for section, n in epochs.items():
            cfg[section]["train"]["epochs"] = n
        start = time.perf_counter()
    procs = launch(args, names, logs)
    ended = {}
    while len(ended) < len(procs):
        for name, p in procs.items():
            if name not in ended and p.poll() is not None:
                ended[name] = (p.returncode, time.perf_counter() - start)
                print(f"[{ended[name][1]:6.0f} s] {name} ended, exit {p.returncode}", flush=True)
        if args.deadline is not None and time.perf_counter() - start > args.deadline:
            for name, p in procs.items():
                if name not in ended:
                    os.killpg(p.pid, signal.SIGTERM)
            for name, p in procs.items():
                if name not in ended:
                    p.wait()
                    ended[name] = ("stopped at deadline", time.perf_counter() - start)
        if len(ended) < len(procs):
            time.sleep(2)
    print(f"\n{'job':28s} {'state':22s} {'seconds':>8s} {'epochs':>7s}  last validation")
    for name in names:
        state, secs = ended[name]
        epochs, val = progress(cfg, name)
        state = "done" if state == 0 else (f"exit {state}" if isinstance(state, int) else state)
        print(f"{name:28s} {state:22s} {secs:8.0f} {epochs:7d}  {val}")
    return 0 if all(s == 0 for s, _ in ended.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
