"""How much a run's Table I moves between runs: several finished runs' table1.csv side by side.

    python bench/demo_spread.py results/demo results/demo-seed1 ...   [--metric dsc]

Prints, per dataset and method, each run's mean of the metric and the range over the runs, as
Markdown: what docs/results.md's "what a normal run looks like" table is made from. Runs of the
demo with other training seeds: copy demo/run.yaml, change `run:` and both `seed:` of `train:`, and
`snakemake --profile demo --configfile that.yaml`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from skullrecon.report import METHOD_LABELS, dataset_label


def spread(runs: list[Path], metric: str) -> str:
    tables = {}
    for run in runs:
        path = run / "table1.csv"
        if not path.is_file():
            sys.exit(f"{path}: no Table I (is the run finished?)")
        table = pd.read_csv(path, keep_default_na=False)
        if "defect_type" in table:  # the overall rows; a dataset of several kinds has a row per kind too
            table = table[table["defect_type"] == ""]
        tables[run.name] = table.set_index(["dataset", "method"])[f"{metric}_mean"].astype(float)
    table = pd.DataFrame(tables)
    lines = []
    for dataset, block in table.groupby(level="dataset", sort=False):
        lines += [f"{dataset_label(dataset)}, mean {metric.upper()} per run", "",
                  "| Method | " + " | ".join(table.columns) + " | range |", "|---" * (len(table.columns) + 2) + "|"]
        for (_, method), row in block.iterrows():
            cells = [f"{v:.3f}" for v in row]
            lines.append(f"| {METHOD_LABELS.get(method, method)} | " + " | ".join(cells)
                         + f" | {row.min():.3f}-{row.max():.3f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders (results/<run>)")
    parser.add_argument("--metric", default="dsc", choices=["dsc", "bdsc", "hd95"])
    args = parser.parse_args()
    print(spread(args.runs, args.metric))


if __name__ == "__main__":
    main()
