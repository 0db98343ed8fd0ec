"""Benchmark: one-skull reconstruction (``skullrecon reconstruct``) stage by stage, today's
implementation against the one before it, measured in one run.

``new`` is :func:`skullrecon.infer.reconstruct_file` as it is; ``old`` (:func:`old_reconstruct`,
below) is the same command built from the whole-volume reference functions it used before
(:func:`~skullrecon.preprocess.reference_to_grid`, :func:`~skullrecon.preprocess.reference_from_grid`,
:func:`~skullrecon.postprocess.reference_extract_implant`). Both write the same files; the script
checks that the implant and reconstruction are equal voxel for voxel, and prints the seconds of
every stage of both and their ratio, and the total without the network's forward pass.

The network is replaced by a plausible prediction (:func:`plausible_prediction`): the defective
skull on the grid with the defect filled by the mirror image of the other side, so the implant
has the size and place of a real one (an untrained network predicts noise, and the cost of
extraction depends on the implant). The network's own forward pass is timed separately with
``--forward`` (an untrained model of the paper's MAE at the config's grid).

Input: the real SkullBreak defective skull ``../shared/data/real/autoimplantpipe_skullbreak_
parietotemporal_001.nii.gz`` (512^3 at 0.4 mm, relative to the repository root) or ``--input``.

    python bench/reconstruct.py                    # old and new, once each
    python bench/reconstruct.py --repeats 3        # medians of three alternating runs
    python bench/reconstruct.py --forward --device cuda
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
from unittest import mock

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real" / "autoimplantpipe_skullbreak_parietotemporal_001.nii.gz"
STAGES = ("load", "preprocess", "upsample", "extract", "write")  # write: the volumes and the STL mesh


def plausible_prediction(grid_defective: np.ndarray) -> np.ndarray:
    """Probabilities (float32, grid^3) of a believable reconstruction of a defective skull.

    Columns along axis 0 (left-right) with bone on one side of the skull and none on the other are
    taken as the defect; there the mirror image of the other side is added, and the whole is
    lightly blurred so the prediction's surface is not the input's. Not a network: a stand-in with
    the extent of a real reconstruction, for timing and for comparing implementations.
    """
    from scipy.ndimage import binary_dilation, gaussian_filter

    g = grid_defective.astype(bool)
    xs = np.flatnonzero(g.any(axis=(1, 2)))
    lo, hi = int(xs[0]), int(xs[-1])
    mid = (lo + hi) // 2
    src = lo + hi - np.arange(g.shape[0])
    ok = (src >= 0) & (src < g.shape[0])
    mirror = np.zeros_like(g)
    mirror[ok] = g[src[ok]]
    out = g.copy()
    for side, other in ((slice(0, mid), slice(mid, None)), (slice(mid, None), slice(0, mid))):
        missing = binary_dilation(g[other].any(axis=0) & ~g[side].any(axis=0), iterations=3)
        out[side] |= mirror[side] & missing[None]
    return gaussian_filter(out.astype(np.float32), 0.5)


def _model(path: Path, config: Path, grid: int | None) -> dict:
    from skullrecon.models import build_network, save_model

    cfg = yaml.safe_load(config.read_text())
    grid = grid or int(cfg["preprocess"]["grid"])
    spec = {"method": "mae_d", "arch": cfg["mae"]["arch"], "network": cfg["mae"]["network"], "grid": grid,
            "margin": float(cfg["preprocess"]["margin"]), "postprocess": cfg["postprocess"], "task": "reconstruct"}
    torch.manual_seed(0)
    save_model(path, build_network(spec["arch"], spec["network"], grid), spec)
    return spec


def old_reconstruct(defective_path: Path, model_path: Path, out_dir: Path, device: str = "cpu") -> dict:
    """``reconstruct_file`` as it was before the box-restricted stages (the reference)."""
    from skullrecon.infer import predict
    from skullrecon.io import read_volume, write_volume
    from skullrecon.models import load_model, pick_device
    from skullrecon.postprocess import PostprocessConfig, reference_extract_implant
    from skullrecon.preprocess import plan_crop, reference_from_grid, reference_to_grid

    s: dict[str, float] = {}
    t = time.perf_counter()
    defective = read_volume(defective_path)
    if not defective.array.any():
        raise ValueError(f"{defective_path}: the defective skull is empty (no voxel is 1)")
    dev = pick_device(device)
    net, spec = load_model(model_path, dev)
    s["load"] = time.perf_counter() - t
    t = time.perf_counter()
    geom = plan_crop(defective.array, defective.spacing, spec["grid"], spec["margin"])
    grid_input = (reference_to_grid(defective.array, geom) >= 0.5).astype(np.uint8)
    s["preprocess"] = time.perf_counter() - t
    t = time.perf_counter()
    prob = predict(net, grid_input, dev)
    s["network"] = time.perf_counter() - t
    t = time.perf_counter()
    post = PostprocessConfig.from_dict(spec["postprocess"])
    prediction = reference_from_grid(prob, geom, post.threshold)
    if defective.array.flags.f_contiguous and not prediction.flags.f_contiguous:
        prediction = np.asfortranarray(prediction)
    s["upsample"] = time.perf_counter() - t
    t = time.perf_counter()
    implant = reference_extract_implant(prediction, defective.array, defective.spacing, spec["task"], post)
    s["extract"] = time.perf_counter() - t
    suffix = ".nii.gz" if defective.format == "nifti" else ".nrrd"
    reconstruction = prediction | defective.array if spec["task"] == "reconstruct" else implant | defective.array
    t = time.perf_counter()
    write_volume(out_dir / f"implant{suffix}", implant, like=defective)
    write_volume(out_dir / f"reconstruction{suffix}", reconstruction, like=defective)
    if implant.any():
        old_write_stl(out_dir / "implant.stl", implant, defective)
    s["write"] = time.perf_counter() - t
    return {"seconds": s, "implant_voxels": int(implant.sum())}


def old_write_stl(path: Path, mask: np.ndarray, like) -> None:
    """``skullrecon.mesh.write_stl`` as it was: marching cubes over the whole box, from a float copy
    in the mask's memory order, oriented by the mesh's signed volume (the same file as today's)."""
    from skimage.measure import marching_cubes

    from skullrecon.mesh import _signed_volume

    lo = [int(np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0]) for ax in range(3)]
    hi = [int(np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[-1]) + 1 for ax in range(3)]
    padded = np.pad(mask[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, level=0.5)
    verts = verts.astype(np.float64) + (np.asarray(lo, float) - 1.0)
    faces = np.ascontiguousarray(faces)
    if _signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1]
    if np.linalg.det(like.affine[:3, :3]) < 0:
        faces = faces[:, ::-1]
    verts = verts @ np.asarray(like.affine, float)[:3, :3].T + np.asarray(like.affine, float)[:3, 3]
    tri = verts[faces].astype(np.float32)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norms = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, norms, out=np.zeros_like(normals), where=norms > 0)
    record = np.zeros(len(faces), dtype=[("normal", "<f4", 3), ("vertices", "<f4", (3, 3)), ("attr", "<u2")])
    record["normal"], record["vertices"] = normals, tri
    with open(path, "wb") as fh:
        fh.write(b"skullrecon implant, units mm".ljust(80, b" ") + np.uint32(len(faces)).tobytes() + record.tobytes())


_PREDICT_CPU = [0.0]  # CPU seconds spent making plausible predictions (not part of either implementation)


def _plausible_predict(net, grid_input, device):
    t = time.process_time()
    prob = plausible_prediction(grid_input)
    _PREDICT_CPU[0] += time.process_time() - t
    return prob


def run_both(source: Path, model: Path, out: Path, repeats: int) -> tuple[dict, dict, float, int]:
    from skullrecon.infer import reconstruct_file
    from skullrecon.io import read_volume

    seconds = {"old": {k: [] for k in STAGES}, "new": {k: [] for k in STAGES}}
    totals = {"old": [], "new": []}
    cpu = {"old": [], "new": []}
    reads = []
    for _ in range(repeats):
        t = time.perf_counter()
        read_volume(source)
        reads.append(time.perf_counter() - t)
        for name in ("old", "new"):
            # the network is replaced by the plausible prediction, in both and outside the timing
            c0, p0 = time.process_time(), _PREDICT_CPU[0]
            with mock.patch("skullrecon.infer.predict", _plausible_predict):
                if name == "old":
                    r = old_reconstruct(source, model, out / name)
                else:
                    r = reconstruct_file(source, model, out / name, device="cpu")
            for k in STAGES:
                seconds[name][k].append(r["seconds"].get(k, 0.0))
            totals[name].append(sum(v for k, v in r["seconds"].items() if k != "network"))
            cpu[name].append(time.process_time() - c0 - (_PREDICT_CPU[0] - p0))
    med = {n: {k: statistics.median(v) for k, v in st.items()} for n, st in seconds.items()}
    totals = {n: statistics.median(v) for n, v in totals.items()}
    totals.update({f"{n}_cpu": statistics.median(v) for n, v in cpu.items()})
    return med, totals, statistics.median(reads), r["implant_voxels"]


def _same_outputs(out: Path) -> bool:
    from skullrecon.io import read_volume

    names = [p.name for p in (out / "new").iterdir() if p.name.startswith(("implant.", "reconstruction."))
             and not p.name.endswith(".stl")]
    stl = (out / "old" / "implant.stl").read_bytes() == (out / "new" / "implant.stl").read_bytes()
    return bool(names) and stl and all(
        np.array_equal(read_volume(out / "old" / n).array, read_volume(out / "new" / n).array) for n in names)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=REAL, help="defective skull (default: the real SkullBreak case)")
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml", help="config with the MAE network")
    ap.add_argument("--grid", type=int, default=None, help="network grid (default: the config's, 256)")
    ap.add_argument("--repeats", type=int, default=1, help="alternating old/new runs; medians are printed")
    ap.add_argument("--forward", action="store_true", help="also time the untrained network's forward pass")
    ap.add_argument("--device", default="auto", help="device of --forward: auto | cpu | cuda")
    args = ap.parse_args()
    if not args.input.exists():
        ap.error(f"{args.input}: not found (give a defective skull with --input)")

    threads = torch.get_num_threads()
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} torch threads, "
               f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = _model(tmp / "mae.pt", args.config, args.grid)
        print(f"machine: {machine}")
        print(f"input: {args.input.name}; grid {spec['grid']}^3; network replaced by a plausible prediction")
        med, totals, read_s, voxels = run_both(args.input, tmp / "mae.pt", tmp, args.repeats)
        same = _same_outputs(tmp)
        print(f"\nseconds per stage (median of {args.repeats}), old = whole-volume reference, new = library:")
        print(f"  {'stage':<11} {'old':>8} {'new':>8} {'old/new':>8}")
        for k in STAGES:
            o, n = med["old"][k], med["new"][k]
            print(f"  {k:<11} {o:8.3f} {n:8.3f} {o / n if n > 0 else float('nan'):8.1f}")
        o, n = totals["old"], totals["new"]
        print(f"  {'total':<11} {o:8.3f} {n:8.3f} {o / n:8.1f}   (all stages but the network)")
        oc, nc = totals["old_cpu"], totals["new_cpu"]
        print(f"  {'CPU s':<11} {oc:8.3f} {nc:8.3f} {oc / nc:8.1f}   (process CPU time, all threads, "
              "network excluded: a measure less sensitive to other load on the machine)")
        print(f"\nreading the input alone: {read_s:.3f} s; new total = {n / read_s:.1f} x the read")
        print(f"target: new total <= 5 s on 2 cores: {'met' if n <= 5 else 'NOT met'} ({n:.2f} s)")
        print(f"implant {voxels} voxels; old and new outputs identical (volumes voxel for voxel, STL byte for byte): {same}")

        if args.forward:
            from skullrecon.infer import predict
            from skullrecon.models import load_model, pick_device

            dev = pick_device(args.device)
            net, _ = load_model(tmp / "mae.pt", dev)
            x = (np.random.default_rng(0).random((spec["grid"],) * 3) < 0.1).astype(np.uint8)
            times = []
            for i in range(3):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                predict(net, x, dev)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            print(f"network forward pass ({dev}): median of 3 {statistics.median(times):.3f} s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
