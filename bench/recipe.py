"""Training recipes compared by CPU-seconds to a validation score (issue: the MAE's long training).

Train one recipe exactly as the pipeline's ``train_mae`` / ``train_baseline`` job does (same cases, the
trainer's own seeded validation split, one thread), with settings overridden on the command line:

    python bench/recipe.py train --config realdata/run.yaml --data results/recipe/real64 --name old
    python bench/recipe.py train --config realdata/run.yaml --data results/recipe/real64 --name new \\
        --set mae.train.cpu_bf16=true --set mae.train.coarse_epochs=60 ...

``--data`` is a preprocessed training split (``cases/``, ``healthy/``: the ``realdata/`` training ids
only). Each epoch's row (with ``cpu_seconds``, this process's CPU time) goes to
``<out>/<name>/history.csv`` as training goes, so a run can be stopped at any time (``--device cuda``
trains on a GPU: the curves against epochs, as ``gpu/recipes.sh`` runs them on a lent card). Then

    python bench/recipe.py table results/recipe/old results/recipe/new [--thresholds 0.70 0.75 0.79]

prints, per run, the cumulative CPU-seconds (training and validation) at which ``val_restored_dsc``
first reached each threshold, the best reached, and the ratio to the first run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

from skullrecon.settings import apply_override, baseline_train, is_mae


def train(args: argparse.Namespace) -> None:
    from skullrecon.train import train_run

    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(args.config.read_text())
    for s in args.set:
        apply_override(cfg, s)
    out = args.out / args.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps({"argv": sys.argv[1:], "method": args.method,
                                                   "mae": cfg["mae"], "baselines": cfg["baselines"]}, indent=1))
    common = dict(input_dirs=[args.data], model_path=out / "model.pt", history_path=out / "history-final.csv",
                  checkpoint_dir=out, method=args.method, grid=cfg["preprocess"]["grid"],
                  margin=cfg["preprocess"]["margin"], device=args.device)
    if is_mae(args.method):
        mae = cfg["mae"]
        train_run("reconstruct", arch=mae["arch"], network=mae["network"], train=mae["train"],
                  masking=mae["masking"], augment=mae.get("augment"), loss=mae.get("loss"), **common)
    else:
        train_run("implant", arch=args.method, network=cfg["baselines"]["networks"][args.method],
                  train=baseline_train(cfg, args.method), **common)


def reach(history: pd.DataFrame, thresholds: list[float], column: str = "val_restored_dsc") -> dict:
    """Cumulative CPU-seconds (and epoch) at which ``column`` first reached each threshold."""
    cpu = history["cpu_seconds"].cumsum()
    row = {"epochs": int(history["epoch"].iloc[-1]), "cpu_s": float(cpu.iloc[-1]),
           "best": float(history[column].max()), "best_epoch": int(history.loc[history[column].idxmax(), "epoch"])}
    for t in thresholds:
        hit = history.index[history[column] >= t]
        row[f"cpu_s@{t:.2f}"] = float(cpu[hit[0]]) if len(hit) else None
        row[f"epoch@{t:.2f}"] = int(history["epoch"][hit[0]]) if len(hit) else None
    return row


def table(args: argparse.Namespace) -> None:
    rows = []
    for run in args.runs:
        h = pd.read_csv(Path(run) / "history.csv")
        rows.append({"run": Path(run).name, **reach(h, args.thresholds)})
    df = pd.DataFrame(rows).set_index("run")
    first = df.iloc[0]
    for t in args.thresholds:
        key = f"cpu_s@{t:.2f}"
        if first[key] is not None and pd.notna(first[key]):
            df[f"ratio@{t:.2f}"] = first[key] / df[key]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df.round(3).to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--config", type=Path, required=True)
    t.add_argument("--data", type=Path, required=True, help="a preprocessed training split")
    t.add_argument("--name", required=True)
    t.add_argument("--method", default="mae_d", help="mae_d, mae_nd or a baseline name")
    t.add_argument("--set", action="append", default=[], help="a.b.c=value override (YAML value)")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--device", default="cpu", help="cpu (the default: CPU-seconds are what this compares), cuda or auto")
    t.add_argument("--out", type=Path, default=Path("results/recipe"))
    s = sub.add_parser("table")
    s.add_argument("runs", nargs="+", type=Path)
    s.add_argument("--thresholds", type=float, nargs="+", default=[0.70, 0.75, 0.79])
    args = ap.parse_args()
    train(args) if args.cmd == "train" else table(args)


if __name__ == "__main__":
    main()
