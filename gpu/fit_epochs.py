"""Fit a run's epoch counts to a GPU machine before training it (what Snakemake alone cannot do).

    python gpu/fit_epochs.py --configfile realdata/run-gpu.yaml --budget 270
    snakemake --profile gpu --configfile realdata/run-gpu.yaml results/realdata-skullfix-gpu/fitted_epochs.yaml

The probe is the workflow itself, so it trains exactly what the train rules train: the run's training
jobs through ``--profile gpu`` (side by side, as the real run will share the card), every epoch count cut
to ``--probe-epochs``, as a run of its own (``<run>-probe``, reading the run's preprocessed cases, removed
afterwards). From each job's median seconds per epoch (its first epoch left out) all epoch counts are
scaled by one factor, the config's MAE : baseline ratio kept, multiples of 10, so that the slowest job
fits ``--budget`` seconds (a method's own ``baselines.epochs_per_method`` is not scaled). The counts are
printed and written to ``results/<run>/fitted_epochs.yaml``, a config file to give Snakemake after the
run's own (Snakemake merges the two). Arguments after ``--`` go to every Snakemake call.
"""

from __future__ import annotations

import argparse
import copy
import csv
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def fitted_epochs(cfg: dict, seconds_per_epoch: dict[str, float], budget: float) -> dict[str, int]:
    """Epochs per section (mae, baselines) scaled by one factor so that the slowest job fits ``budget``."""
    planned = {"mae": cfg["mae"]["train"]["epochs"], "baselines": cfg["baselines"]["train"]["epochs"]}
    section = {name: "mae" if name.startswith("mae_") else "baselines" for name in seconds_per_epoch}
    longest = max(planned[section[n]] * s for n, s in seconds_per_epoch.items())
    scale = min(1.0, budget / longest)
    # never below 10 epochs, never above the config's
    return {k: min(v, max(10, int(v * scale) // 10 * 10)) for k, v in planned.items()}


def snakemake(args, *more: str) -> None:
    # targets before --configfile, which takes every word up to the next option
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile", str(args.profile),
           *more, *args.snakemake_args]
    if subprocess.run(cmd).returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", type=Path, required=True, help="the run's config (e.g. realdata/run-gpu.yaml)")
    ap.add_argument("--budget", type=float, required=True, help="seconds the slowest training job may take")
    ap.add_argument("--probe-epochs", type=int, default=4, help="epochs per job in the probe (the first is not timed)")
    ap.add_argument("--profile", type=Path, default=REPO / "gpu", help="Snakemake profile (default: gpu/)")
    ap.add_argument("snakemake_args", nargs="*", help="after --: more Snakemake arguments for every call")
    args = ap.parse_args(argv)
    if args.probe_epochs < 2:
        ap.error("--probe-epochs must be at least 2: the first epoch is not timed")
    cfg = yaml.safe_load(args.configfile.read_text())
    results, probe = Path("results") / cfg["run"], Path("results") / f"{cfg['run']}-probe"

    # the run's training cases first (the real run needs them too), then the probe reads them
    trained_on = sorted(set(cfg["mae"]["datasets"]) | (set(cfg["datasets"]) if cfg["baselines"]["methods"] else set()))
    snakemake(args, *(f"{results}/preprocessed/{d}/train" for d in trained_on), "--configfile", str(args.configfile))
    shutil.rmtree(probe, ignore_errors=True)  # symlinks inside are removed, never followed
    probe.mkdir(parents=True)
    for shared in ("data", "preprocessed"):  # synthetic data too, so that Snakemake finds preprocessing done
        if (results / shared).exists():
            (probe / shared).symlink_to(Path("..") / cfg["run"] / shared, target_is_directory=True)

    # the probe: this config with a few epochs only, as a run of its own
    own = cfg["baselines"].get("epochs_per_method") or {}
    overlay = {"run": probe.name, "mae": {"train": {"epochs": args.probe_epochs}},
               "baselines": {"train": {"epochs": args.probe_epochs},
                             "epochs_per_method": {m: args.probe_epochs for m in own}}}
    overlay_file = probe / "probe.yaml"
    overlay_file.write_text(yaml.safe_dump(overlay))
    snakemake(args, "--until", "train_mae", "train_baseline", "--configfile", str(args.configfile), str(overlay_file))
    speeds = {}
    for history in sorted((probe / "training").glob("*.csv")):
        rows = list(csv.DictReader(history.open()))
        speeds[history.stem] = statistics.median(float(r["seconds"]) for r in rows[1:])
        print(f"probe: {history.stem:28s} {speeds[history.stem]:6.2f} s per epoch side by side", flush=True)
    shutil.rmtree(probe)

    epochs = fitted_epochs(cfg, speeds, args.budget)
    fitted = {section: {"train": {"epochs": n}} for section, n in epochs.items()}
    (results / "fitted_epochs.yaml").write_text(
        f"# gpu/fit_epochs.py --budget {args.budget:g} (probe: {args.probe_epochs} epochs per job)\n"
        + yaml.safe_dump(fitted, sort_keys=True))
    profile = "gpu" if args.profile == REPO / "gpu" else args.profile
    print(f"epochs fitted to {args.budget:g} s: {epochs}\nnow: snakemake --profile {profile} --configfile "
          f"{args.configfile} {results}/fitted_epochs.yaml", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
