"""Benchmark: one-skull reconstruction (``skullrecon reconstruct``) stage by stage.

Builds an untrained model of the paper's MAE configuration (``mae.network`` of config.yaml at
``preprocess.grid``, 256 in the paper; the weights do not change the cost), runs
:func:`skullrecon.infer.reconstruct_file` once on a defective skull and prints the seconds of
every stage (load, preprocess, network, upsample, extract, write, mesh). The network's forward pass
is then timed on its own: ``--warmup`` passes, then the median of ``--repeats`` (with
``torch.cuda.synchronize`` on a GPU). Peak resident memory of the process is reported too.

Input: the real SkullBreak defective skull ``../shared/data/real/autoimplantpipe_skullbreak_
parietotemporal_001.nii.gz`` (512^3 at 0.4 mm, relative to the repository root) when present, else a
synthetic 256^3 SkullBreak-like skull, or any file given with ``--input``.

    python bench/reconstruct.py                       # device auto (GPU if present)
    python bench/reconstruct.py --device cpu --repeats 1 --warmup 0
    python bench/reconstruct.py --grid 128 --synthetic
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real" / "autoimplantpipe_skullbreak_parietotemporal_001.nii.gz"


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _synthetic_input(folder: Path, size: int) -> Path:
    from skullrecon.synthetic import generate_dataset

    generate_dataset(folder / "synthetic", "skullbreak", n_train=0, n_test=1, shape=(size,) * 3,
                     spacing=(200.0 / size,) * 3, seed=0, defect_types=["parietotemporal"])
    return folder / "synthetic" / "testing" / "defective_skull" / "parietotemporal" / "000.nrrd"


def _mae_model(path: Path, config: Path, grid: int | None) -> dict:
    from skullrecon.models import build_network, save_model

    cfg = yaml.safe_load(config.read_text())
    grid = grid or int(cfg["preprocess"]["grid"])
    spec = {"method": "mae_d", "arch": cfg["mae"]["arch"], "network": cfg["mae"]["network"], "grid": grid,
            "margin": float(cfg["preprocess"]["margin"]), "postprocess": cfg["postprocess"], "task": "reconstruct"}
    torch.manual_seed(0)
    save_model(path, build_network(spec["arch"], spec["network"], grid), spec)
    return spec


def time_forward(model_path: Path, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of the network's forward pass alone, as run by :func:`skullrecon.infer.predict`."""
    from skullrecon.infer import predict
    from skullrecon.models import load_model

    net, spec = load_model(model_path, device)
    x = (np.random.default_rng(0).random((spec["grid"],) * 3) < 0.1).astype(np.uint8)
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        predict(net, x, device)  # includes the host->device copy and the probabilities' copy back
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, help="defective skull (default: the real SkullBreak case if present)")
    ap.add_argument("--synthetic", action="store_true", help="use a synthetic skull even if the real one is present")
    ap.add_argument("--size", type=int, default=256, help="synthetic skull size per axis (default 256)")
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml", help="config with the MAE network")
    ap.add_argument("--grid", type=int, default=None, help="network grid (default: the config's, 256)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--warmup", type=int, default=None, help="untimed forward passes (default 2 GPU, 0 CPU)")
    ap.add_argument("--repeats", type=int, default=None, help="timed forward passes (default 10 GPU, 1 CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    from skullrecon.infer import reconstruct_file
    from skullrecon.io import read_volume
    from skullrecon.models import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    warmup = args.warmup if args.warmup is not None else (2 if device.type == "cuda" else 0)
    repeats = args.repeats if args.repeats is not None else (10 if device.type == "cuda" else 1)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.input is not None:
            source = args.input
        elif REAL.exists() and not args.synthetic:
            source = REAL
        else:
            t = time.perf_counter()
            source = _synthetic_input(tmp, args.size)
            print(f"synthetic {args.size}^3 skull generated in {time.perf_counter() - t:.1f} s")
        vol = read_volume(source)
        spec = _mae_model(tmp / "mae.pt", args.config, args.grid)
        print(f"device: {name}")
        print(f"input: {source.name}: shape {vol.shape}, spacing {np.round(vol.spacing, 4).tolist()} mm, "
              f"{int(vol.array.sum())} voxels")
        print(f"model: untrained {spec['arch']} {json.dumps(spec['network'])} at grid {spec['grid']}^3, "
              f"task {spec['task']}")
        del vol

        t = time.perf_counter()
        result = reconstruct_file(source, tmp / "mae.pt", tmp / "out", device=args.device)
        total = time.perf_counter() - t
        print("\nreconstruct_file, seconds per stage:")
        for stage, sec in result["seconds"].items():
            print(f"  {stage:<11} {sec:8.3f}")
        print(f"  {'total':<11} {total:8.3f}")
        print(f"implant voxels: {result['implant_voxels']}  (untrained weights: the shape means nothing)")
        peak_after_reconstruct = _peak_rss_gib()

        times = time_forward(tmp / "mae.pt", device, warmup, repeats)
        print(f"\nnetwork forward pass alone ({warmup} warm-up, {repeats} timed): "
              f"median {statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s")
        if device.type == "cuda":
            print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
        print(f"peak process memory (RSS): {peak_after_reconstruct:.2f} GiB during reconstruct_file, "
              f"{_peak_rss_gib():.2f} GiB overall")

        if args.json:
            args.json.write_text(json.dumps({
                "device": name, "input": source.name, "grid": spec["grid"], "seconds": result["seconds"],
                "total_seconds": total, "forward_seconds": times, "peak_rss_gib": _peak_rss_gib(),
            }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
