"""Choose the post-processing of a finished run on its validation cases, never its test cases.

Every trained network of a run (``<results>/networks/*.pt``) is applied to the training cases it held
out for its per-epoch validation (the trainer's seeded ``val_fraction`` split of the preprocessed
training cases: neither the MAE nor the baselines trained on them); each prediction goes back to the
original grid, the implant is extracted under each candidate post-processing, and DSC, boundary DSC
and HD95 are scored against the true implant on the original grid, as the pipeline scores.

    python bench/choose_postprocess.py --results results/realdata-skullfix --config realdata/run.yaml \
        --dataset skullfix

Prints a table (mean per method and candidate) and the candidate with the best mean DSC over all
methods (one choice for every method alike); writes the per-case rows to
``<results>/postprocess_choice.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
import yaml

from skullrecon.infer import predict
from skullrecon.io import read_volume
from skullrecon.metrics import evaluate_case
from skullrecon.models import load_model
from skullrecon.postprocess import PostprocessConfig, extract_implant
from skullrecon.preprocess import from_grid, load_case
from skullrecon.train import TrainConfig, _split

CANDIDATES = {  # name -> overrides of the config's post-processing
    "paper (closing)": {"opening_mm": 0.0, "largest_component": False},
    "closing + largest component": {"opening_mm": 0.0, "largest_component": True},
    "closing + opening 1.6 mm + largest component": {"opening_mm": 1.6, "largest_component": True},
}


def validation_ids(cases_dir: Path, train_cfg: dict) -> list[str]:
    cfg = TrainConfig.from_dict(train_cfg)
    _, val = _split(sorted(cases_dir.glob("*.npz")), cfg.val_fraction, cfg.seed)
    return [p.stem for p in val]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--dataset", required=True, help="the dataset whose training split the networks used")
    args = ap.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    pre = args.results / "preprocessed" / args.dataset / "train"
    tsv = pd.read_csv(pre / "cases.tsv", sep="\t", dtype=str).set_index("name")
    val = validation_ids(pre / "cases", cfg["baselines"]["train"])
    assert val == validation_ids(pre / "healthy", cfg["mae"]["train"]), "MAE and baselines hold out other cases"
    print(f"validation cases (held out by every training): {', '.join(val)}")
    nets = sorted(p for p in (args.results / "networks").glob("*.pt")
                  if p.stem.startswith("mae_") or p.stem.endswith(f"_{args.dataset}"))
    rows = []
    for name in val:
        defective = read_volume(tsv.loc[name, "defective"])
        truth = read_volume(tsv.loc[name, "implant"]).array
        arrays, geom = load_case(pre / "cases" / f"{name}.npz")
        for path in nets:
            net, spec = load_model(path)
            prob = predict(net, arrays["defective"], torch.device("cpu"))
            base = dict(cfg["postprocess"])
            up = from_grid(prob, geom, PostprocessConfig.from_dict(base).threshold)
            for cand, over in CANDIDATES.items():
                pp = PostprocessConfig.from_dict({**base, **over})
                implant = extract_implant(up, defective.array, defective.spacing, spec["task"], pp)
                m = evaluate_case(implant, truth, defective.array, defective.spacing,
                                  cfg["metrics"]["boundary_margin_mm"])
                rows.append({"case": name, "method": spec["method"], "postprocess": cand, **m})
            print(f"{name} {spec['method']}: " + ", ".join(f"{r['dsc']:.3f}" for r in rows[-len(CANDIDATES):]),
                  flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(args.results / "postprocess_choice.csv", index=False)
    table = df.groupby(["postprocess", "method"])[["dsc", "bdsc", "hd95"]].mean().unstack("postprocess")
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    overall = df.groupby("postprocess")["dsc"].mean()
    print("\nmean DSC over all methods and validation cases:")
    print(overall.round(3).to_string())
    print(f"\nchosen (best mean DSC, for every method alike): {overall.idxmax()}")


if __name__ == "__main__":
    main()
