"""Does a trained model beat the same network untrained? Both scored on the same test cases, in one run.

    python bench/untrained.py --results results/demo --method mae_d --dataset skullfix

Writes an untrained copy of the model (same spec, fresh seeded weights) to a temporary folder, runs it
through the pipeline's own inference, upsampling, implant extraction and metrics, and prints the mean
DSC / boundary DSC / HD95 of both.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import torch

from skullrecon.infer import extract_cases, infer_cases, upsample_cases
from skullrecon.models import build_network, load_model, save_model
from skullrecon.postprocess import PostprocessConfig
from skullrecon.report import evaluate_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results/demo"))
    parser.add_argument("--method", default="mae_d")
    parser.add_argument("--dataset", default="skullfix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model_file = args.results / "models" / (
        f"{args.method}.pt" if args.method.startswith("mae_") else f"{args.method}_{args.dataset}.pt")
    _, spec = load_model(model_file)
    torch.manual_seed(args.seed)
    untrained = build_network(spec["arch"], spec["network"], spec["grid"])
    cases = args.results / "preprocessed" / args.dataset / "test"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_model(tmp / "untrained.pt", untrained, spec)
        infer_cases(tmp / "untrained.pt", cases / "cases", tmp / "pred", device="cpu", log=lambda _: None)
        upsample_cases(tmp / "pred", cases / "cases.tsv", tmp / "up", spec["postprocess"]["threshold"], log=lambda _: None)
        extract_cases(tmp / "up", cases / "cases.tsv", tmp / "implants", spec["task"],
                      PostprocessConfig.from_dict(spec["postprocess"]), log=lambda _: None)
        untrained_metrics = evaluate_method(tmp / "implants", cases / "cases.tsv", tmp / "m.csv")
    trained = pd.read_csv(args.results / "metrics" / args.dataset / f"{args.method}.csv")
    print(f"{args.method} on {args.dataset} ({len(trained)} test cases): mean dsc / bdsc / hd95 [mm]")
    for name, table in (("trained", trained), ("untrained", untrained_metrics)):
        print(f"  {name:9s} {table.dsc.mean():.3f} / {table.bdsc.mean():.3f} / {table.hd95.mean():.2f}"
              f"   (empty implants: {int(table.empty_prediction.sum())})")


if __name__ == "__main__":
    main()
