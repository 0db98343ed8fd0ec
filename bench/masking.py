"""Benchmark: one masked training case (make_mask + apply_mask) versus whole-volume elastic warping.

Builds a skull-like ellipsoidal shell (semi-axes 95 x 80 x 75 mm, 6 mm thick) on a ``size``^3 grid
covering 256 mm (1 mm spacing at the default 256^3), then times on one CPU thread:

* ours, D: ``make_mask`` with deformable patches + ``apply_mask`` (median over ``--repeats``
  seeds, so over random patch counts and sizes), with the cubic B-spline field (the default) and
  with the trilinear one;
* ours, ND: the same with sharp cubes;
* TorchIO ``RandomElasticDeformation`` applied to the whole volume (``--tio-repeats`` runs),
  i.e. what deforming masks by warping the full grid would cost.

Usage: ``python bench/masking.py [--size 256] [--repeats 20] [--tio-repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from skullrecon.masking import MaskConfig, apply_mask, make_mask

__all__ = ["skull_shell", "time_ours", "time_torchio", "main"]

FIELD_MM = 256.0
SEMI_AXES_MM = (95.0, 80.0, 75.0)
THICKNESS_MM = 6.0


def skull_shell(size: int) -> tuple[np.ndarray, float]:
    """Ellipsoidal shell on a ``size``^3 grid spanning 256 mm.

    Args:
        size: voxels per axis.

    Returns:
        (uint8 volume, spacing in mm).
    """
    sp = FIELD_MM / size
    c = (np.arange(size) - (size - 1) / 2) * sp
    x, y, z = np.meshgrid(c, c, c, indexing="ij", sparse=True)
    a, b, cc = SEMI_AXES_MM
    t = THICKNESS_MM
    outer = (x / a) ** 2 + (y / b) ** 2 + (z / cc) ** 2 <= 1
    inner = (x / (a - t)) ** 2 + (y / (b - t)) ** 2 + (z / (cc - t)) ** 2 <= 1
    return (outer & ~inner).astype(np.uint8), sp


def time_ours(skull: np.ndarray, sp: float, cfg: MaskConfig, repeats: int) -> dict:
    """Time make_mask + apply_mask over seeds 0..repeats-1 (seconds), plus removed fractions."""
    n_skull = np.count_nonzero(skull)
    make_mask(skull, sp, cfg, np.random.default_rng(10_000))  # warm-up (lazy torch init)
    totals, masks, fracs = [], [], []
    for seed in range(repeats):
        t0 = time.perf_counter()
        mask = make_mask(skull, sp, cfg, np.random.default_rng(seed))
        t1 = time.perf_counter()
        out = apply_mask(skull, mask)
        t2 = time.perf_counter()
        totals.append(t2 - t0)
        masks.append(t1 - t0)
        fracs.append(1.0 - np.count_nonzero(out) / n_skull)
    return {
        "median": statistics.median(totals),
        "max": max(totals),
        "median_make_mask": statistics.median(masks),
        "mean_removed_fraction": float(np.mean(fracs)),
    }


def time_torchio(skull: np.ndarray, sp: float, repeats: int) -> dict:
    """Time TorchIO RandomElasticDeformation (default settings) on the whole volume (seconds)."""
    import SimpleITK as sitk
    import torchio as tio

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # TorchIO resamples with SimpleITK
    image = tio.ScalarImage(
        tensor=torch.from_numpy(skull.astype(np.float32))[None], affine=np.diag([sp, sp, sp, 1.0])
    )
    subject = tio.Subject(skull=image)
    transform = tio.RandomElasticDeformation()
    times = []
    for seed in range(repeats):
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        transform(subject)
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "max": max(times)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="grid size per axis (spans 256 mm)")
    ap.add_argument("--repeats", type=int, default=20, help="seeds timed for our masks")
    ap.add_argument("--tio-repeats", type=int, default=3, help="TorchIO runs (seconds each)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    skull, sp = skull_shell(args.size)
    print(f"shell {args.size}^3 at {sp:.3g} mm, {np.count_nonzero(skull)} skull voxels, "
          f"1 thread, torch {torch.__version__}")
    d = time_ours(skull, sp, MaskConfig(deform=True), args.repeats)
    d_lin = time_ours(skull, sp, MaskConfig(deform=True, elastic_interpolation="linear"), args.repeats)
    nd = time_ours(skull, sp, MaskConfig(deform=False), args.repeats)
    tio_t = time_torchio(skull, sp, args.tio_repeats)
    for name, r in (("ours D (cubic) ", d), ("ours D (linear)", d_lin), ("ours ND        ", nd)):
        print(f"{name}: median {r['median'] * 1e3:7.1f} ms  max {r['max'] * 1e3:7.1f} ms  "
              f"(make_mask median {r['median_make_mask'] * 1e3:.1f} ms; "
              f"mean removed {r['mean_removed_fraction']:.1%}; {args.repeats} seeds)")
    print(f"TorchIO RandomElasticDeformation, whole volume: median {tio_t['median']:.2f} s  "
          f"max {tio_t['max']:.2f} s ({args.tio_repeats} runs)")
    print(f"ratio TorchIO / ours D (cubic) : {tio_t['median'] / d['median']:.0f}x")
    print(f"ratio TorchIO / ours D (linear): {tio_t['median'] / d_lin['median']:.0f}x")
    print(f"ratio TorchIO / ours ND        : {tio_t['median'] / nd['median']:.0f}x")


if __name__ == "__main__":
    main()
