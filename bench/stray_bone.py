"""Where a method's implant errs: at the defect, or as stray bone elsewhere on the skull.

For every scored case of a finished run: the share of the predicted implant farther than
``--near`` mm from the true implant (stray bone, which no fill of the defect explains), and the DSC
of the prediction restricted to within ``--near`` mm of the true implant (how well the defect
itself is filled). Reads ``<results>/implants/<dataset>/<method>/`` and the true implants named in the preprocessed
test split's ``cases.tsv``.

    python bench/stray_bone.py --results results/realdata-skullfix --dataset skullfix

An analysis of results already reported, not a way to choose settings.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from skullrecon.io import read_volume


def stray_and_local(pred: np.ndarray, gt: np.ndarray, spacing, near_mm: float) -> tuple[float, float]:
    import edt

    p, g = pred.astype(bool), gt.astype(bool)
    if not p.any() or not g.any():
        return float("nan"), 0.0
    dist = edt.edt(np.ascontiguousarray(~g), anisotropy=tuple(float(s) for s in spacing), black_border=False)
    close = dist <= near_mm
    stray = float(np.count_nonzero(p & ~close)) / float(np.count_nonzero(p))
    pl = p & close
    local = 2.0 * np.count_nonzero(pl & g) / float(np.count_nonzero(pl) + np.count_nonzero(g))
    return stray, local


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--near", type=float, default=10.0, help="mm around the true implant counted as the defect")
    args = ap.parse_args()
    cases = pd.read_csv(args.results / "preprocessed" / args.dataset / "test" / "cases.tsv", sep="\t",
                        dtype=str).set_index("name")
    rows = []
    for metrics_csv in sorted((args.results / "metrics" / args.dataset).glob("*.csv")):
        method = metrics_csv.stem
        table = pd.read_csv(metrics_csv, dtype={"case": str})
        for row in table.itertuples():
            pred = read_volume(args.results / "implants" / args.dataset / method / f"{row.case}.nrrd")
            gt = read_volume(cases.loc[row.case, "implant"])
            stray, local = stray_and_local(pred.array, gt.array, pred.spacing, args.near)
            rows.append({"method": method, "case": row.case, "dsc": row.dsc, "stray_share": stray,
                         "dsc_near_defect": local})
    df = pd.DataFrame(rows)
    summary = df.groupby("method")[["dsc", "dsc_near_defect", "stray_share"]].mean()
    print(f"mean over {df['case'].nunique()} cases of {args.dataset}; near = within {args.near} mm of the true implant")
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
