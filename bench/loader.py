"""Benchmark: the MAE's data path at 256^3, the trainer's loader against the one before it, measured
in one run.

What one case costs, part by part, in this process: decoding the case file (before: a compressed
uint8 ``.npz``; now: bit-packed and compressed, :func:`skullrecon.preprocess.save_case`), drawing
and applying the mask (unchanged), and making the tensors handed to the trainer (before: two
float32 grids; now: two uint8 grids, made float on the GPU by :func:`skullrecon.train.train_step`).
Then whole loaders over ``--epochs`` epochs with ``--workers`` processes: before, a new
``DataLoader`` per epoch (workers started every epoch, float32, no pinned memory); now
:func:`skullrecon.train.make_loader` (persistent workers, uint8). Cases per second of both and the
ratios are printed.

Cases: ``--n`` copies of one synthetic skull at ``--grid`` (default 256), or the ``healthy/*.npz``
of a preprocessed folder given with ``--cases``.

    python bench/loader.py                        # 256^3, 2 workers, 3 epochs of 8 cases
    python bench/loader.py --workers 8 --n 32
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _old_load(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data["complete"]


class OldDataset(torch.utils.data.Dataset):
    """The MAE dataset as it was: compressed uint8 files, float32 tensors, epoch set on the object."""

    def __init__(self, files, geoms, mask_cfg, seed=0):
        self.files, self.geoms, self.mask_cfg, self.seed, self.epoch = files, geoms, mask_cfg, seed, 0

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from skullrecon.masking import apply_mask, make_mask

        skull = _old_load(self.files[i]).astype(bool)
        rng = np.random.default_rng([self.seed, self.epoch + 1, i])
        masked = apply_mask(skull, make_mask(skull, self.geoms[i].grid_spacing, self.mask_cfg, rng))
        as_float = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None] for a in (masked, skull)]
        return tuple(as_float)


def _rate_old(ds: OldDataset, workers: int, epochs: int) -> float:
    n, t0 = 0, None
    for epoch in range(epochs):
        if epoch == 1:
            t0 = time.perf_counter()  # epoch 0 untimed in both (imports, first worker start)
        ds.epoch = epoch
        loader = DataLoader(ds, batch_size=1, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(epoch))
        for x, _ in loader:
            n += x.shape[0] if epoch >= 1 else 0
    return n / (time.perf_counter() - t0)


def _rate_new(ds, cfg, workers: int, epochs: int) -> float:
    from skullrecon.train import TrainConfig, make_loader

    loader, sampler = make_loader(ds, TrainConfig.from_dict({**cfg, "num_workers": workers}), torch.device("cpu"))
    n, t0 = 0, None
    for epoch in range(epochs):
        if epoch == 1:
            t0 = time.perf_counter()
        sampler.epoch = epoch
        for x, _ in loader:
            n += x.shape[0] if epoch >= 1 else 0
    return n / (time.perf_counter() - t0)


def main() -> int:
    from gpu import _loader_cases

    from skullrecon.masking import MaskConfig, apply_mask, make_mask
    from skullrecon.preprocess import load_case
    from skullrecon.train import MaskedSkullDataset, _tensor

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", type=int, default=256)
    ap.add_argument("--n", type=int, default=8, help="cases per epoch (synthetic copies)")
    ap.add_argument("--cases", type=Path, default=None, help="preprocessed folder with healthy/*.npz")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per loader (the first is not timed)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of the per-part timings")
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml")
    args = ap.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    mask_cfg = MaskConfig.from_dict(cfg["mae"]["masking"])

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.cases is None:
            _loader_cases(tmp / "new", args.grid, args.n)
            new_files = sorted((tmp / "new" / "healthy").glob("*.npz"))
        else:
            new_files = sorted((args.cases / "healthy").glob("*.npz"))
        geoms, old_files = [], []
        for f in new_files:  # the same cases in the old file layout
            arrays, geom = load_case(f)
            old = tmp / "old" / f.name
            old.parent.mkdir(parents=True, exist_ok=True)
            with open(old, "wb") as fh:
                np.savez_compressed(fh, geometry=np.array(geom.to_json()), complete=arrays["complete"])
            geoms.append(geom)
            old_files.append(old)
        grid = geoms[0].grid
        print(f"{len(new_files)} healthy skulls at {grid}^3; file size old {old_files[0].stat().st_size / 1e3:.0f} kB, "
              f"new {new_files[0].stat().st_size / 1e3:.0f} kB")

        skull = load_case(new_files[0])[0]["complete"].astype(bool)
        rng = np.random.default_rng(0)
        masked = apply_mask(skull, make_mask(skull, geoms[0].grid_spacing, mask_cfg, rng))
        parts = {
            "decode": (_median_time(lambda: _old_load(old_files[0]), args.repeats),
                       _median_time(lambda: load_case(new_files[0]), args.repeats)),
            "tensors": (_median_time(lambda: [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                                              for a in (masked, skull)], args.repeats),
                        _median_time(lambda: [_tensor(a) for a in (masked, skull)], args.repeats)),
        }
        mask_s = _median_time(lambda: apply_mask(skull, make_mask(skull, geoms[0].grid_spacing, mask_cfg, rng)),
                              args.repeats)
        print(f"\nper case, in this process (median of {args.repeats}):   old ms   new ms  old/new")
        for k, (o, n) in parts.items():
            print(f"  {k:<38} {o * 1000:8.1f} {n * 1000:8.1f} {o / n:8.1f}")
        print(f"  {'mask (draw + apply, unchanged)':<38} {mask_s * 1000:8.1f} {mask_s * 1000:8.1f} {1:8.1f}")
        bytes_old, bytes_new = 2 * 4 * grid**3, 2 * grid**3
        print(f"  handed to the trainer per case: {bytes_old / 2**20:.0f} MiB old, {bytes_new / 2**20:.0f} MiB new")

        old_rate = _rate_old(OldDataset(old_files, geoms, mask_cfg), args.workers, args.epochs)
        new_rate = _rate_new(MaskedSkullDataset(new_files, mask_cfg, seed=0), cfg["mae"]["train"], args.workers,
                             args.epochs)
        print(f"\nMAE loader, {args.workers} workers, {args.epochs - 1} timed epochs of {len(new_files)} cases:")
        print(f"  old (DataLoader per epoch, float32): {old_rate:6.2f} cases/s")
        print(f"  new (make_loader: persistent, uint8): {new_rate:6.2f} cases/s   new/old {new_rate / old_rate:.2f}")
        per_worker = new_rate / max(args.workers, 1)
        print(f"  new per worker: {per_worker:.2f} cases/s -> with the config's {cfg['mae']['train']['num_workers']} "
              f"workers about {per_worker * cfg['mae']['train']['num_workers']:.0f} cases/s if cores allow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
