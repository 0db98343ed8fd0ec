"""Benchmark: fast vs reference evaluation metrics on a synthetic skull case.

Builds a skull-like thick ellipsoidal shell with a spherical defect (ground-truth implant = the
part of the shell inside the defect sphere, defective skull = the rest), and a predicted implant
that is slightly off (thicker shell, shifted and larger defect sphere, one false-positive island).
Times :func:`skullrecon.metrics.evaluate_case` against
:func:`skullrecon.metrics.reference_evaluate_case` in one run and prints both times, the ratio,
the largest difference of the values and the peak memory. The fast path runs ``--repeats`` times
before and as many times after the reference (a scoring loop calls it once per case; the median of
all runs is the per-case cost), the reference once (about a minute on an idle machine); the load
average is printed at start and end because a shared machine slows both.

    python bench/metrics.py            # 512^3 at 0.4 mm (the reference takes about a minute)
    python bench/metrics.py --size 192 # the same anatomy on a coarser grid
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import numpy as np

from skullrecon.metrics import evaluate_case, reference_evaluate_case

FIELD_MM = 204.8  # field of view: 512 voxels of 0.4 mm


def _shell(
    zz: np.ndarray, yy: np.ndarray, xx: np.ndarray, center: np.ndarray, outer: np.ndarray, thickness: float
) -> np.ndarray:
    """Voxels inside the outer ellipsoid and outside the inner one (coordinates in mm, float32)."""
    inner = outer - thickness
    d = [zz - center[0], yy - center[1], xx - center[2]]
    r_out = (d[0] / outer[0]) ** 2 + (d[1] / outer[1]) ** 2 + (d[2] / outer[2]) ** 2
    r_in = (d[0] / inner[0]) ** 2 + (d[1] / inner[1]) ** 2 + (d[2] / inner[2]) ** 2
    return (r_out <= 1) & (r_in > 1) & (zz > center[0] - 0.35 * outer[0])  # open skull base


def _ball(zz: np.ndarray, yy: np.ndarray, xx: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    return (zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2 <= radius**2


def synthetic_case(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(pred, gt, defective, spacing) on a ``size``^3 grid covering the same 204.8 mm field.

    Built slab by slab in float32 so that a 512^3 case needs well under 2 GB.
    """
    s = FIELD_MM / size
    spacing = (s, s, s)
    center = np.array([95.0, 102.4, 102.4], np.float32)
    outer = np.array([80.0, 90.0, 75.0], np.float32)  # semi-axes in mm (z, y, x)
    direction = np.array([0.75, 0.35, 0.55], np.float32)
    direction /= np.linalg.norm(direction)
    # a point on the outer surface along `direction`
    t = 1.0 / np.sqrt(np.sum((direction / outer) ** 2))
    defect_center = center + t * direction
    island = defect_center - 14.0 * direction + np.array([0.0, 18.0, 0.0], np.float32)

    pred = np.zeros((size,) * 3, np.uint8)
    gt = np.zeros_like(pred)
    defective = np.zeros_like(pred)
    coords = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(s)
    yy = coords[None, :, None]
    xx = coords[None, None, :]
    step = 32
    for z0 in range(0, size, step):
        zz = coords[z0 : z0 + step, None, None]
        skull = _shell(zz, yy, xx, center, outer, 6.0)
        hole = _ball(zz, yy, xx, defect_center, 35.0)
        gt[z0 : z0 + step] = skull & hole
        defective[z0 : z0 + step] = skull & ~hole
        guess = _shell(zz, yy, xx, center, outer + 0.8, 6.6) & _ball(
            zz, yy, xx, defect_center + np.float32(1.2), 36.0
        )
        guess |= _ball(zz, yy, xx, island, 3.0)  # a false-positive island inside the skull
        pred[z0 : z0 + step] = guess
    return pred, gt, defective, spacing


def _summary(times: list[float]) -> str:
    return f"median {statistics.median(times):.3f} s of {len(times)} runs (first {times[0]:.3f}, best {min(times):.3f})"


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="grid size per axis (default 512, 0.4 mm voxels)")
    parser.add_argument("--margin-mm", type=float, default=10.0, help="bDSC band half-width in mm")
    parser.add_argument("--repeats", type=int, default=5, help="runs of the fast path before and after the reference")
    args = parser.parse_args()
    print(f"machine: {os.uname().machine}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")

    t0 = time.perf_counter()
    pred, gt, defective, spacing = synthetic_case(args.size)
    print(
        f"case: {args.size}^3, spacing {spacing[0]:.4g} mm, voxels pred {np.count_nonzero(pred)}, "
        f"gt {np.count_nonzero(gt)}, defective {np.count_nonzero(defective)} "
        f"(built in {time.perf_counter() - t0:.1f} s, peak memory {_peak_gb():.2f} GB)"
    )

    tiny = np.zeros((8, 8, 8), np.uint8)
    tiny[2:5, 2:5, 2:5] = 1
    evaluate_case(tiny, tiny, tiny, spacing)  # pays the lazy imports outside the timing

    def run_fast(n: int) -> tuple[dict, list[float]]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            result = evaluate_case(pred, gt, defective, spacing, args.margin_mm)
            times.append(time.perf_counter() - t0)
        return result, times

    # fast runs before and after the reference, so a change of load on a shared machine during
    # the long reference run weighs on both sides of the ratio
    fast, before = run_fast(max(1, args.repeats))
    print(f"fast (before the reference): {_summary(before)}  {fast}  (peak memory so far {_peak_gb():.2f} GB)")

    t0 = time.perf_counter()
    ref = reference_evaluate_case(pred, gt, defective, spacing, args.margin_mm)
    t_ref = time.perf_counter() - t0
    print(f"reference: {t_ref:8.3f} s  {ref}  (peak memory so far {_peak_gb():.2f} GB)")

    _, after = run_fast(max(1, args.repeats))
    print(f"fast (after the reference):  {_summary(after)}")
    t_fast = statistics.median(before + after)
    print(f"fast: {t_fast:.3f} s per case (median of all {len(before + after)} runs), reference {t_ref:.3f} s")

    diff = max(abs(fast[k] - ref[k]) for k in ("dsc", "bdsc", "hd95"))
    print(f"speed-up: {t_ref / t_fast:.1f}x   max |fast - reference| over dsc, bdsc, hd95: {diff:.3g}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
