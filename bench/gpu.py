"""GPU check of the paper run: step time and memory of every network, the MAE's inference time, the
data loader against the GPU, and the GPU hours of each training rule against the SLURM time limit.

One command, a few minutes on one A100/H100 (``python bench/gpu.py``). Everything is read from the
paper config (``config.yaml``: grid, networks, batch size, bf16, epochs, DataLoader workers, masks)
and the SLURM profile (``slurm/config.yaml``: runtime per training attempt, retries). The training
step is the trainer's own (:func:`skullrecon.train.train_step` with
:func:`skullrecon.train.build_training`), the forward pass inference's own
(:func:`skullrecon.infer.predict`), the loader the trainer's (:func:`skullrecon.train.make_loader`)
on cases written by :func:`skullrecon.preprocess.save_case` (a synthetic skull at the loader's
grid, or ``--cases`` preprocessed files). Every line names the card.

    python bench/gpu.py                                  # the paper settings on the GPU
    python bench/gpu.py --device cpu --grid 32 --loader-grid 256 --networks mae unet
    python bench/gpu.py --device cpu --grid 32 --repeats 1 --warmup 1 --loader-cases 2 --num-workers 0
    python bench/gpu.py --host-only --grid 256                  # the host's share of inference, no GPU

Per network, each in its own process under ``--network-timeout`` seconds and all of them within
``--budget`` (default 75 s and 420 s: the whole check stays under 8 minutes; an out-of-memory, a
crash or a time limit is that network's row and the next one still runs): median seconds per step
over ``--repeats`` after ``--warmup`` (synchronised), peak GPU memory (``max_memory_allocated``; a
network over 40 GB is flagged, as the smaller A100 has 40 GB), the forward pass as
:func:`skullrecon.infer.predict` runs it, and for the MAE the whole inference with the threshold
on the device and the uint8 result copied back (the paper: under 100 ms). The host's share of
inference at the grid (float32 vs uint8 input, threshold on the host, float32 vs uint8 result
copy) is timed without a network. Expected memory per network: bench/memory.py (docs/memory.md). Projection per training (rule ``train_mae`` x 2 variants, ``train_baseline`` x methods x
datasets): epochs x (training cases x max(step time, 1 / loader rate) + validation cases x
forward time), in GPU hours, and the attempts that needs at the profile's runtime limit.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
# Training cases per dataset (docs/datasets.md): complete skulls (the MAE) and defective cases.
DATASET_CASES = {"skullbreak": {"healthy": 114, "cases": 570, "types": 5}, "skullfix": {"healthy": 100, "cases": 100, "types": 1}}


def card_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_name()} x{torch.get_num_threads()} threads"


def cpu_name() -> str:
    """The CPU's model name (Linux; ``platform.processor()`` is empty there), else the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainings(cfg: dict) -> list[dict]:
    """Every training job of the paper run: method, network, task, epochs and its case counts."""
    from skullrecon.settings import baseline_train

    out = []
    mae_cases = 0
    for ds in cfg["mae"]["datasets"]:
        held = len(cfg["datasets"][ds]["layout"].get("test_ids") or [])
        mae_cases += DATASET_CASES[ds]["healthy"] - held
    for variant in cfg["mae"]["variants"]:
        out.append({"rule": "train_mae", "method": f"mae_{variant}", "arch": cfg["mae"]["arch"],
                    "network": cfg["mae"]["network"], "train": cfg["mae"]["train"], "cases": mae_cases})
    for method in cfg["baselines"]["methods"]:
        for ds in cfg["datasets"]:
            held = len(cfg["datasets"][ds]["layout"].get("test_ids") or []) * DATASET_CASES[ds]["types"]
            out.append({"rule": "train_baseline", "method": f"{method}_{ds}", "arch": method,
                        "network": cfg["baselines"]["networks"][method], "train": baseline_train(cfg, method),
                        "cases": DATASET_CASES[ds]["cases"] - held})
    return out


def time_steps(arch: str, network: dict, train: dict, grid: int, device: torch.device, warmup: int,
               repeats: int, loss: dict | None = None, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Median seconds per training step and peak memory of one network, as the trainer steps it
    (its network, layout, loss and autocast); ``clock`` ``time.process_time`` for CPU-seconds."""
    from skullrecon.train import LossConfig, TrainConfig, build_training, train_step, uses_channels_last

    cfg = TrainConfig.from_dict(train)
    loss_cfg = LossConfig.from_dict(loss)
    spec = {"arch": arch, "network": network, "grid": grid, "keep_input": loss_cfg.keeps_input}
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    net, opt, _, loss_fn, bf16 = build_training(spec, cfg, device, loss_cfg)
    channels_last = uses_channels_last(cfg, device, bf16)
    net.train()
    gen = torch.Generator().manual_seed(0)
    side = min(cfg.crop, grid) if cfg.crop else grid  # a training step sees the crop, validation the grid
    shape = (cfg.batch_size, 1) + (side,) * 3
    x = (torch.rand(shape, generator=gen) < 0.1).to(torch.uint8)  # uint8, as the loader hands it over
    y = (torch.rand(shape, generator=gen) < 0.1).to(torch.uint8)
    if loss_cfg.needs_mask:  # the MAE's target then carries the mask as a second channel
        y = torch.cat([y, (torch.rand(shape, generator=gen) < 0.05).to(torch.uint8)], dim=1)
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t = clock()
        loss = train_step(net, opt, loss_fn, x, y, device, bf16, channels_last, check=False)  # finite: reported
        _sync(device)
        if i >= warmup:
            times.append(clock() - t)
    finite = math.isfinite(float(loss))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    params = sum(p.numel() for p in net.parameters())
    del net, opt
    return {"step_s": statistics.median(times), "peak_gib": peak, "finite": finite, "params": params,
            "bf16": bf16, "channels_last": channels_last, "batch": cfg.batch_size}


def time_forward(arch: str, network: dict, grid: int, device: torch.device, warmup: int, repeats: int,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of one case's reconstruction on the grid, as the paper times it: the input copied to the
    device, :func:`skullrecon.infer.probabilities`, the threshold on the device and the uint8 result copied back."""
    from skullrecon.infer import probabilities
    from skullrecon.models import build_network

    torch.manual_seed(0)
    net = build_network(arch, network, grid).to(device).eval()
    x = (np.random.default_rng(0).random((grid,) * 3) < 0.1).astype(np.uint8)
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t = clock()
        (probabilities(net, x, device) >= 0.5).to(torch.uint8).cpu()
        _sync(device)
        if i >= warmup:
            times.append(clock() - t)
    return statistics.median(times)


@torch.no_grad()
def time_infer_uint8(arch: str, network: dict, grid: int, device: torch.device, warmup: int, repeats: int,
                     threshold: float = 0.5) -> float:
    """Median seconds of one case from the uint8 grid on the host to the thresholded uint8 grid back
    on the host, the threshold done on the device: the copy back is a quarter of float32's."""
    from skullrecon.models import build_network

    torch.manual_seed(0)
    net = build_network(arch, network, grid).to(device).eval()
    x = (np.random.default_rng(0).random((grid,) * 3) < 0.1).astype(np.uint8)
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t = time.perf_counter()
        xt = torch.from_numpy(x).to(device)[None, None].float()  # uint8 over the bus, float on the device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = net(xt)
        (torch.sigmoid(logits.float()) >= threshold)[0, 0].to(torch.uint8).cpu().numpy()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def host_share(grid: int, repeats: int = 5, threshold: float = 0.5) -> dict:
    """Seconds of the host's part of one case's inference at ``grid``^3 (no network): the input made
    float32 on the host (as :func:`skullrecon.infer.predict` does) vs uint8 handed as it is, and a
    float32 probability map thresholded to uint8 on the host vs a uint8 result only copied."""
    rng = np.random.default_rng(0)
    x = (rng.random((grid,) * 3) < 0.1).astype(np.uint8)
    prob = torch.from_numpy(rng.random((grid,) * 3, dtype=np.float32))
    mask = (prob >= threshold).to(torch.uint8)

    def med(fn):
        ts = []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts[1:])

    return {"input_float32_s": med(lambda: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).clone()),
            "input_uint8_s": med(lambda: torch.from_numpy(x).clone()),
            "threshold_host_s": med(lambda: (prob >= threshold).to(torch.uint8).numpy()),
            "copy_float32_s": med(lambda: prob.clone().numpy()),
            "copy_uint8_s": med(lambda: mask.clone().numpy())}


def _loader_cases(folder: Path, grid: int, n: int) -> list[Path]:
    """``n`` case files at ``grid``^3 (one synthetic skull, a healthy and a defective/implant pair each)."""
    from skullrecon.preprocess import preprocess_volume, save_case
    from skullrecon.synthetic import make_case

    size = grid + grid // 4
    spacing = (220.0 / size,) * 3
    skull, masks, _ = make_case((size,) * 3, spacing, seed=0, case=0, kinds=["parietotemporal"])
    removed = masks["parietotemporal"].astype(bool)
    g_skull, geom = preprocess_volume(skull, spacing, grid, 0.1)
    g_def, geom_d = preprocess_volume((skull.astype(bool) & ~removed).astype(np.uint8), spacing, grid, 0.1)
    from skullrecon.preprocess import to_grid

    g_imp = (to_grid(removed.astype(np.uint8), geom_d) >= 0.5).astype(np.uint8)
    files = []
    for i in range(n):
        save_case(folder / "healthy" / f"{i:03d}.npz", geom, complete=g_skull)
        save_case(folder / "cases" / f"{i:03d}.npz", geom_d, defective=g_def, implant=g_imp)
        files.append(f"{i:03d}.npz")
    return files


def loader_rates(files_dir: Path, cfg: dict, workers: int, device: torch.device, epochs: int = 2) -> dict:
    """Cases per second of the trainer's loader (MAE: load + mask; baselines: load), and the
    in-process cost per case of each part."""
    from skullrecon.masking import MaskConfig, apply_mask, make_mask
    from skullrecon.preprocess import load_case
    from skullrecon.train import MaskedSkullDataset, PairDataset, TrainConfig, make_loader

    mask_cfg = MaskConfig.from_dict(cfg["mae"]["masking"])
    out = {}
    healthy = sorted((files_dir / "healthy").glob("*.npz"))
    pairs = sorted((files_dir / "cases").glob("*.npz"))
    for name, ds in (("mae", MaskedSkullDataset(healthy, mask_cfg, seed=0)), ("baseline", PairDataset(pairs))):
        tcfg = TrainConfig.from_dict({**cfg["mae"]["train"], "num_workers": workers})
        loader, sampler = make_loader(ds, tcfg, device)
        n, t0 = 0, None
        for epoch in range(epochs):  # the first epoch starts the workers; the rest is timed
            sampler.epoch = epoch
            if epoch == 1:
                t0 = time.perf_counter()
            for x, _ in loader:
                x.to(device, non_blocking=True)
                n += x.shape[0] if epoch >= 1 else 0
        _sync(device)
        out[name] = n / (time.perf_counter() - t0)
        del loader
    # in-process parts, one case
    t = time.perf_counter()
    arrays, geom = load_case(healthy[0])
    out["decode_s"] = time.perf_counter() - t
    skull = arrays["complete"].astype(bool)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    apply_mask(skull, make_mask(skull, geom.grid_spacing, mask_cfg, rng))
    out["mask_s"] = time.perf_counter() - t
    return out


TRAIN_RULES = ("train_mae", "train_baseline")


def rule_limits(rules: Path) -> dict[str, dict]:
    """``retries`` and ``runtime`` (minutes) that each training rule declares in ``rules`` (train.smk)."""
    text = rules.read_text()
    out = {}
    for rule in TRAIN_RULES:
        found = re.search(rf"^rule {rule}:\n(.*?)(?=^rule |\Z)", text, flags=re.S | re.M)
        body = found.group(1) if found else ""
        retries = re.search(r"^\s+retries:\s*(\d+)", body, flags=re.M)
        runtime = re.search(r"^\s+runtime=([\d\s*]+),", body, flags=re.M)
        out[rule] = {"retries": int(retries.group(1)) if retries else None,
                     "runtime": math.prod(int(f) for f in runtime.group(1).split("*")) if runtime else None}
    return out


def slurm_limits(profile: Path, rules: Path = REPO / "workflow" / "rules" / "train.smk") -> dict:
    """Runtime per attempt (hours) and retries of each training rule as the SLURM profile runs it:
    the profile's ``set-resources`` and ``retries`` where it sets them, else what the rule declares
    (a rule's own ``retries`` wins over the global one, as in Snakemake)."""
    prof = yaml.safe_load(profile.read_text())
    res = prof.get("set-resources", {})
    default = prof.get("default-resources", {}).get("runtime", 60)
    declared = rule_limits(rules)
    runtime_h, retries = {}, {}
    for r in TRAIN_RULES:
        runtime = res.get(r, {}).get("runtime", declared[r]["runtime"] or default)
        runtime_h[r] = float(runtime) / 60
        retries[r] = declared[r]["retries"] if declared[r]["retries"] is not None else int(prof.get("retries", 0))
    return {"retries": retries, "runtime_h": runtime_h}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml")
    ap.add_argument("--set", action="append", default=[], help="a.b.c=value override of the config (YAML value)")
    ap.add_argument("--slurm-profile", type=Path, default=REPO / "slurm" / "config.yaml")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu")
    ap.add_argument("--grid", type=int, default=None, help="network grid (default: the config's, 256)")
    ap.add_argument("--loader-grid", type=int, default=None, help="grid of the loader's cases (default: --grid)")
    ap.add_argument("--networks", nargs="+", default=None,
                    help="subset: mae and/or baseline method names (default: all)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--num-workers", type=int, default=None, help="loader workers (default: the config's)")
    ap.add_argument("--loader-cases", type=int, default=16, help="cases per loader epoch")
    ap.add_argument("--network-timeout", type=float, default=75, help="seconds per network (own process)")
    ap.add_argument("--budget", type=float, default=420, help="seconds for all networks together")
    ap.add_argument("--host-only", action="store_true", help="only the host's share of inference at --grid")
    ap.add_argument("--host-repeats", type=int, default=5)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cases", type=Path, default=None,
                    help="preprocessed folder with healthy/ and cases/ to load instead of synthetic cases")
    args = ap.parse_args(argv)

    from skullrecon.models import pick_device
    from skullrecon.settings import apply_override, baseline_train

    cfg = yaml.safe_load(args.config.read_text())
    for override in args.set:
        apply_override(cfg, override)
    device = pick_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda asked for, but no CUDA GPU is available")
    card = card_name(device)
    grid = args.grid or int(cfg["preprocess"]["grid"])
    loader_grid = args.loader_grid or grid
    workers = args.num_workers if args.num_workers is not None else int(cfg["mae"]["train"]["num_workers"])
    jobs = trainings(cfg)
    archs = {"mae": (cfg["mae"]["arch"], cfg["mae"]["network"], cfg["mae"]["train"])}
    for m in cfg["baselines"]["methods"]:
        archs[m] = (m, cfg["baselines"]["networks"][m], baseline_train(cfg, m))
    chosen = args.networks or list(archs)
    unknown = sorted(set(chosen) - set(archs))
    if unknown:
        ap.error(f"unknown network(s) {unknown}; choose from {sorted(archs)}")

    def say(text: str) -> None:
        print(f"[{card}] {text}", flush=True)

    overrides = "".join(f" --set {o}" for o in args.set)
    say(f"torch {torch.__version__}, grid {grid}^3, loader grid {loader_grid}^3, config {args.config.name}{overrides}")
    if args.child:  # one network in this process: its numbers as one JSON line for the parent
        arch, network, train = archs[args.child]
        try:
            r = time_steps(arch, network, train, grid, device, args.warmup, args.repeats,
                           cfg["mae"].get("loss") if args.child == "mae" else None)
        except torch.cuda.OutOfMemoryError:
            r = {"oom": True}
        except (RuntimeError, ValueError) as err:  # e.g. UNETR below 64^3: 1-voxel feature maps
            r = {"failed": f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"}
        if "step_s" in r:
            r["forward_s"] = time_forward(arch, network, grid, device, args.warmup, args.repeats)
            if args.child == "mae":
                r["infer_uint8_s"] = time_infer_uint8(arch, network, grid, device, args.warmup, args.repeats,
                                                      float(cfg["postprocess"]["threshold"]))
        print(json.dumps(r), flush=True)
        return 0
    if args.host_only:  # the host's share alone: no network, any machine
        chosen = []

    # Each network in its own process under its own time limit, the whole set within --budget: an
    # out-of-memory, a crash or a hang is that network's row, and the others still run.
    steps, forward = {}, {}
    start = time.monotonic()
    for name in chosen:
        limit = min(args.network_timeout, args.budget - (time.monotonic() - start))
        if limit < 5:
            say(f"{name:<14} step: NOT RUN (the {args.budget:.0f} s budget is spent)")
            continue
        cmd = [sys.executable, __file__, "--child", name, "--config", str(args.config), "--device", str(device),
               "--grid", str(grid), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
        cmd += [f"--set={override}" for override in args.set]  # the child measures the same config
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
            lines = proc.stdout.strip().splitlines()
            r = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
                "failed": f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['no output'])[-1][:160]}"}
        except subprocess.TimeoutExpired:
            r = {"failed": f"TIMEOUT after {limit:.0f} s"}
        if r.get("oom"):
            say(f"{name:<14} step: OUT OF MEMORY at {grid}^3, batch {archs[name][2]['batch_size']}")
            continue
        if "failed" in r:
            say(f"{name:<14} step: FAILED at {grid}^3 ({r['failed']})")
            continue
        steps[name] = r
        flag = "" if not r["peak_gib"] > 40e9 / 2**30 else "  ** over 40 GB (37.3 GiB): does not fit an A100-40GB **"
        say(f"{name:<14} step {r['step_s'] * 1000:9.1f} ms (median of {args.repeats}, batch {r['batch']}, "
            f"bf16 {'on' if r['bf16'] else 'off'}), peak memory {r['peak_gib']:.2f} GiB, "
            f"{r['params'] / 1e6:.1f} M parameters, loss finite {r['finite']}{flag}")
        forward[name] = r["forward_s"]
        note = "  (paper: < 100 ms)" if name == "mae" else ""
        say(f"{name:<14} inference forward {forward[name] * 1000:9.1f} ms per case{note}")
        if "infer_uint8_s" in r:
            say(f"{name:<14} inference, threshold on the device, uint8 back {r['infer_uint8_s'] * 1000:9.1f} ms per case{note}")
    h = host_share(grid, repeats=args.host_repeats)
    say(f"host share per case at {grid}^3: input float32 {h['input_float32_s'] * 1000:.1f} ms vs uint8 "
        f"{h['input_uint8_s'] * 1000:.1f} ms; threshold on the host {h['threshold_host_s'] * 1000:.1f} ms; "
        f"result copy float32 {h['copy_float32_s'] * 1000:.1f} ms vs uint8 {h['copy_uint8_s'] * 1000:.1f} ms")
    if args.host_only:
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.cases or Path(tmp)
        if args.cases is None:
            _loader_cases(folder, loader_grid, args.loader_cases)
        rates = loader_rates(folder, cfg, workers, device)
    say(f"loader at {loader_grid}^3, {workers} workers: MAE (load + mask) {rates['mae']:.1f} cases/s, "
        f"baseline (load) {rates['baseline']:.1f} cases/s; in-process per case: decode "
        f"{rates['decode_s'] * 1000:.1f} ms, mask {rates['mask_s'] * 1000:.1f} ms")
    for name, r in steps.items():
        rate = rates["mae" if name == "mae" else "baseline"]
        verdict = "loader keeps up" if rate >= 1 / r["step_s"] else "LOADER-BOUND (GPU starves)"
        say(f"{name:<14} steps/s {1 / r['step_s']:8.2f} vs loader {rate:8.2f} cases/s: {verdict}")

    limits = slurm_limits(args.slurm_profile)
    say(f"projection (profile {args.slurm_profile.parent.name}: runtime per attempt "
        f"{limits['runtime_h']['train_mae']:.0f} h / {limits['runtime_h']['train_baseline']:.0f} h, "
        f"retries {limits['retries']['train_mae']} / {limits['retries']['train_baseline']}; grid {grid}^3{'' if grid == int(cfg['preprocess']['grid']) else ' - NOT the paper grid'})")
    for job in jobs:
        key = "mae" if job["rule"] == "train_mae" else job["method"].rsplit("_", 1)[0]
        if key not in steps:
            continue
        tr = job["train"]
        n_val = max(1, round(job["cases"] * tr["val_fraction"])) if tr["val_fraction"] > 0 else 0
        n_train = job["cases"] - n_val
        per_case = max(steps[key]["step_s"], 1 / rates["mae" if key == "mae" else "baseline"])
        hours = tr["epochs"] * (math.ceil(n_train / tr["batch_size"]) * per_case + n_val * forward[key]) / 3600
        limit = limits["runtime_h"][job["rule"]]
        attempts = max(1, math.ceil(hours / limit))
        ok = "fits" if attempts <= 1 + limits["retries"][job["rule"]] else "DOES NOT FIT the retries"
        say(f"{job['rule']:<14} {job['method']:<24} {tr['epochs']:5d} epochs x {n_train:3d} cases: "
            f"{hours:8.1f} {'GPU' if device.type == 'cuda' else 'CPU'} h -> {attempts} attempt(s) of {limit:.0f} h "
            f"({attempts - 1} resubmission(s); {ok})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
