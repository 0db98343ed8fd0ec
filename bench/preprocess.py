"""Benchmark: preprocessing a real dataset split, the read-once implementation against the one before
it (validate every file, then read it again; whole-box area resampling), measured in one run.

Input: the 59 shared real SkullFix training triplets ``../shared/data/skullfix`` (relative to the
repository root; layout ``training_set/{complete_skull,defective_skull,implant}/NNN.nrrd``) or
``--root``. ``--cases N`` takes the first N case ids (symbolic links in a temporary folder), for a
shorter run. Both write every case and healthy skull at ``--grid`` (default 256, the paper's);
the script checks that the two outputs are equal array for array and prints seconds per case of
both and their ratio.

    python bench/preprocess.py                 # all 59 cases (several minutes)
    python bench/preprocess.py --cases 10
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "skullfix"
KINDS = ("complete_skull", "defective_skull", "implant")


def _subset(root: Path, split_dir: str, n: int | None, out: Path) -> Path:
    ids = sorted(p.name for p in (root / split_dir / "defective_skull").glob("*.nrrd"))[:n]
    for kind in KINDS:
        (out / split_dir / kind).mkdir(parents=True)
        for name in ids:
            (out / split_dir / kind / name).symlink_to(root / split_dir / kind / name)
    return out


def _same(a: Path, b: Path) -> bool:
    from skullrecon.preprocess import load_case

    files = sorted(p.relative_to(a) for p in a.rglob("*.npz"))
    if not files or files != sorted(p.relative_to(b) for p in b.rglob("*.npz")):
        return False
    for f in files:
        (xa, ga), (xb, gb) = load_case(a / f), load_case(b / f)
        if ga != gb or xa.keys() != xb.keys() or any(not np.array_equal(xa[k], xb[k]) for k in xa):
            return False
    return True


def main() -> int:
    from skullrecon.datasets import Layout
    from skullrecon.preprocess import preprocess_split, reference_preprocess_split

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=SHARED, help="SkullFix-layout dataset root")
    ap.add_argument("--split-dir", default="training_set")
    ap.add_argument("--cases", type=int, default=None, help="only the first N cases (default: all)")
    ap.add_argument("--grid", type=int, default=256)
    args = ap.parse_args()
    if not (args.root / args.split_dir / "defective_skull").is_dir():
        ap.error(f"{args.root / args.split_dir}: no defective_skull folder")
    layout = Layout(train=args.split_dir, test=args.split_dir)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = _subset(args.root, args.split_dir, args.cases, tmp / "data")
        seconds = {}
        for name, fn in (("old", reference_preprocess_split), ("new", preprocess_split)):
            t = time.perf_counter()
            summary = fn(root, layout, "train", tmp / name, grid=args.grid, margin=0.1, log=lambda *_: None)
            seconds[name] = time.perf_counter() - t
        n = summary["cases"]
        same = _same(tmp / "old", tmp / "new")
    print(f"{n} real SkullFix triplets from {args.root.name}/{args.split_dir} -> {args.grid}^3 "
          f"(each: defective + implant case, complete skull as a healthy skull)")
    print(f"  old (validate, then read again; whole-box resampling): {seconds['old'] / n:6.2f} s per case")
    print(f"  new (read once; resampling where the skull is):        {seconds['new'] / n:6.2f} s per case")
    print(f"  old/new: {seconds['old'] / seconds['new']:.2f}; outputs identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
