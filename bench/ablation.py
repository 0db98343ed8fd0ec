"""Validation ablation: train one setting on training cases, score implants on validation cases.

    python bench/ablation.py --config realdata/run.yaml --data results/ablation/skullfix64 \
        --name first-stride-1 --set mae.network.strides=[1,2,2,2] --epochs 20

``--data`` is a preprocessed *training* split (``preprocess_split(..., "train", ...)``: ``cases/``
and ``healthy/``), so test cases never enter. A fixed, seeded subset of its cases (``--n-val``) is
the validation set: the MAE trains on the healthy skulls of the other cases, the supervised
``--method unet`` on their defect/implant pairs, and both are scored on the validation cases'
defective skulls -> implants (DSC, boundary DSC, HD95), on the network's grid (fast) and, with
``--full-res``, on the original grid after upsampling (as the pipeline scores). Every implant is
scored under each post-processing in ``--postprocess`` (``paper``: closing only, as the paper;
``config``: the config's own). One row per (setting, post-processing) is appended to
``<out>/ablation.csv`` with what it was measured on; ``docs/ablation.md`` records the runs.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from skullrecon.infer import predict
from skullrecon.metrics import evaluate_case
from skullrecon.models import build_network, load_model
from skullrecon.postprocess import PostprocessConfig, extract_implant
from skullrecon.preprocess import from_grid, load_case
from skullrecon.train import LossConfig, TrainConfig, train_model
from skullrecon.masking import MaskConfig
from skullrecon.settings import apply_override, is_mae


def split(data: Path, n_val: int, seed: int) -> tuple[list[str], list[str]]:
    """(training ids, validation ids): a seeded choice of ``n_val`` case names."""
    names = sorted(p.stem for p in (data / "cases").glob("*.npz"))
    if len(names) <= n_val:
        raise ValueError(f"{data}: {len(names)} cases, need more than --n-val {n_val}")
    val = sorted(np.random.default_rng(seed).choice(names, n_val, replace=False).tolist())
    return [n for n in names if n not in val], val


def train(cfg: dict, method: str, data: Path, train_ids: list[str], out: Path, epochs: int | None) -> Path:
    """Train the MAE (``mae_d`` / ``mae_nd``) or a baseline on the training ids; returns the model file."""
    grid = cfg["preprocess"]["grid"]
    if is_mae(method):
        section, task, sub = cfg["mae"], "reconstruct", "healthy"
        arch, network = section["arch"], section["network"]
        mask_cfg = MaskConfig.from_dict(section["masking"])
        mask_cfg.deform = method == "mae_d"
        loss = LossConfig.from_dict(section.get("loss"))
    else:
        section, task, sub = cfg["baselines"], "implant", "cases"
        arch, network, mask_cfg, loss = method, section["networks"][method], None, None
    train_cfg = dict(section["train"], num_workers=0)
    if epochs:
        train_cfg["epochs"] = epochs
    files = [data / sub / f"{i}.npz" for i in train_ids if (data / sub / f"{i}.npz").exists()]
    spec = {"method": method, "arch": arch, "network": network, "grid": grid,
            "margin": cfg["preprocess"]["margin"], "postprocess": cfg["postprocess"]}
    model = out / "model.pt"
    train_model(task, files, model, spec, TrainConfig.from_dict(train_cfg), out / "ckpt", out / "history.csv",
                mask_cfg=mask_cfg, device="cpu", progress=False, loss=loss, log=lambda *_: None)
    return model


def _postprocess(cfg: dict, which: str) -> PostprocessConfig:
    pp = PostprocessConfig.from_dict(cfg["postprocess"])
    if which == "paper":  # the implant by morphology only: closing, no opening, every component
        pp.opening_mm, pp.largest_component = 0.0, False
    return pp


def evaluate(model: Path, data: Path, val_ids: list[str], cfg: dict, postprocess: list[str],
             full_res: bool) -> list[dict]:
    """Per-case metrics of the validation implants, per post-processing and resolution."""
    net, spec = load_model(model)
    torch.manual_seed(0)
    rows = []
    tsv = pd.read_csv(data / "cases.tsv", sep="\t", dtype=str).set_index("name") if full_res else None
    for name in val_ids:
        arrays, geom = load_case(data / "cases" / f"{name}.npz")
        prob = predict(net, arrays["defective"], torch.device("cpu"))
        for which in postprocess:
            pp = _postprocess(cfg, which)
            binary = prob >= pp.threshold
            imp = extract_implant(binary, arrays["defective"], geom.grid_spacing, spec["task"], pp)
            m = evaluate_case(imp, arrays["implant"], arrays["defective"], geom.grid_spacing)
            rows.append({"case": name, "postprocess": which, "resolution": f"grid {geom.grid}", **m})
        if full_res:
            from skullrecon.io import read_volume

            defective = read_volume(tsv.loc[name, "defective"])
            gt = read_volume(tsv.loc[name, "implant"]).array
            up = from_grid(prob, geom, threshold=cfg["postprocess"].get("threshold", 0.5))
            for which in postprocess:
                pp = _postprocess(cfg, which)
                imp = extract_implant(up, defective.array, defective.spacing, spec["task"], pp)
                m = evaluate_case(imp, gt, defective.array, defective.spacing)
                rows.append({"case": name, "postprocess": which, "resolution": "original", **m})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, required=True, help="the run config the settings start from")
    ap.add_argument("--data", type=Path, required=True, help="preprocessed training split (cases/, healthy/)")
    ap.add_argument("--out", type=Path, default=Path("results/ablation"))
    ap.add_argument("--name", required=True, help="a name for this setting")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--method", default="mae_d", help="mae_d, mae_nd or a baseline (unet, ...)")
    ap.add_argument("--epochs", type=int, default=None, help="override the method's epochs")
    ap.add_argument("--n-val", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--postprocess", nargs="+", default=["paper", "config"], choices=["paper", "config"])
    ap.add_argument("--full-res", action="store_true", help="also score on the original grid")
    ap.add_argument("--measured-on", default=None, help="what the validation cases are (for the table)")
    args = ap.parse_args()

    torch.set_num_threads(1)  # a shared machine: one core per run, several runs side by side
    cfg = yaml.safe_load(args.config.read_text())
    cfg = copy.deepcopy(cfg)
    for s in args.set:
        apply_override(cfg, s)
    train_ids, val_ids = split(args.data, args.n_val, args.seed)
    run_dir = args.out / "runs" / f"{args.name}_{args.method}"
    t0, c0 = time.time(), time.process_time()
    model = train(cfg, args.method, args.data, train_ids, run_dir, args.epochs)
    seconds, cpu_seconds = time.time() - t0, time.process_time() - c0  # CPU time: one thread, load-independent
    hist = pd.read_csv(run_dir / "history.csv")
    per_case = pd.DataFrame(evaluate(model, args.data, val_ids, cfg, args.postprocess, args.full_res))
    per_case.to_csv(run_dir / "validation.csv", index=False)
    measured = args.measured_on or f"{args.data.name}: {len(val_ids)} validation cases {','.join(val_ids)}"
    summary = []
    for (pp, res), g in per_case.groupby(["postprocess", "resolution"], sort=False):
        summary.append({
            "setting": args.name, "method": args.method, "overrides": " ".join(args.set),
            "epochs": int(hist["epoch"].max()), "train_s": round(seconds),
            "train_cpu_s": round(cpu_seconds), "postprocess": pp,
            "resolution": res, "measured_on": measured, "n": len(g),
            "dsc_mean": round(g["dsc"].mean(), 3), "dsc_median": round(g["dsc"].median(), 3),
            "bdsc_mean": round(g["bdsc"].mean(), 3), "hd95_mean": round(g["hd95"].mean(), 2),
            "last_val_dsc": round(float(hist["val_dsc"].iloc[-1]), 3),
            "last_val_restored_dsc": round(float(hist.get("val_restored_dsc", hist["val_dsc"]).iloc[-1]), 3),
        })
    table = pd.DataFrame(summary)
    csv = args.out / "ablation.csv"
    table.to_csv(csv, mode="a", header=not csv.exists(), index=False)
    print(table.drop(columns=["measured_on", "overrides"]).to_string(index=False))


if __name__ == "__main__":
    main()
