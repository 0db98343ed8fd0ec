"""Training memory of every network of the paper run at 256^3, known without a GPU.

    python bench/memory.py                       # every network, the grids below, then 256^3
    python bench/memory.py --networks unet --grids 32 48 64 --timeout 180
    python bench/memory.py --one swinunetr 256 fake-cuda    # one count (real | fake | fake-cuda), JSON

Per network (``config.yaml``'s settings, batch size, bf16 autocast as the trainer runs it), each
measurement in its own subprocess with a time limit:

* **measured**: training steps (:func:`skullrecon.train.train_step` on
  :func:`skullrecon.train.build_training`'s network, AdamW and loss) on the CPU with bf16 autocast
  forced on, at small grids. What is counted is the peak of the bytes held by live tensors (a
  ``TorchDispatchMode`` sees every tensor an op returns, a weakref finaliser sees it freed; the
  parameters are counted up front). That is the quantity ``torch.cuda.max_memory_allocated`` reports
  on a GPU (bench/gpu.py), unlike the process RSS, which adds the CPU's own convolution scratch and
  malloc's caching and has no GPU counterpart; the RSS high-water mark is printed next to it.
* **fit**: memory = a + b * voxels per network, least squares over the measured grids, evaluated
  at 256^3. Linear because every activation a convolutional network keeps for backward is
  channels x voxels / stride^3, and parameters, gradients and AdamW state do not depend on the grid.
  Attention over all tokens (UNETR: (grid/16)^3 tokens, 12 layers) grows with the voxels squared,
  which a linear fit from small grids cannot see; hence also:
* **counted at 256^3**: the same step on fake tensors (``FakeTensorMode``: shapes and dtypes, no
  data, no arithmetic), so the paper grid is counted directly in seconds. At the measured grids it
  agrees with the real step (printed), which is what makes the 256^3 count trustworthy.

Two steps are run, so the AdamW state (created at the first step) is held during the second; the
optimiser's step and forward + backward are counted apart (hooks on the optimiser) and fitted
apart, as the optimiser's peak barely grows with the grid.

What a GPU holds differs from the CPU's count in two ways. CUDA's autocast casts more than the
CPU's (layer_norm, group_norm and interpolation in float32, softmax with a float32 result; ATen's
autocast_mode.h): the 256^3 count is also made with those dtypes (:func:`cuda_autocast_policy`).
Beyond that (cuDNN workspaces, allocator rounding) the H100's ``max_memory_allocated`` for the MAE
(bench/results/gpu-h100.txt) is above the count: per network that excess is given both as the
same GiB added and as the same factor, and a network fits the 40 GB A100 only if both do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
import weakref
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
# Grids where activations, not the parameters, gradients and AdamW state, hold most of the memory
# (at 32^3 the MAE's activations are a tenth of its 110 MB: the peak is then the optimiser's step and
# not linear in the voxels). UNETR (16^3 patches) and SwinUNETR (multiples of 32) take minutes per
# step on 2 CPU cores from 96^3 on, so smaller grids there.
DEFAULT_GRIDS = {"unetr": [48, 64, 80], "swinunetr": [64, 96], "default": [64, 96, 128]}
# H100 max_memory_allocated at 256^3, bf16, batch 1 (bench/results/gpu-h100.txt)
GPU_MEASURED = {"mae": 2.00, "unet": 2.00}


class LiveBytes(TorchDispatchMode):
    """Peak bytes of live tensor storages while active (each storage counted once)."""

    def __init__(self, start: int = 0):
        super().__init__()
        self.live, self.seen = start, set()
        self.phase, self.peaks = "fwd_bwd", {"fwd_bwd": start, "opt": start}  # see phase hooks in measure()

    @property
    def peak(self) -> int:
        return max(self.peaks.values())

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self.seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key = id(st)  # storages keep their Python object while alive, so id() is stable
                if key not in self.seen:
                    self.seen.add(key)
                    self.live += st.nbytes()
                    weakref.finalize(st, self._free, key, st.nbytes())
        self.peaks[self.phase] = max(self.peaks[self.phase], self.live)
        return out


@contextlib.contextmanager
def cuda_autocast_policy():
    """What CUDA's autocast does beyond the CPU's for these networks (ATen's autocast_mode.h: CUDA
    runs layer_norm, group_norm and the interpolations in float32 and gives softmax a float32
    result; CPU autocast leaves them in bfloat16), emulated on the CPU by wrapping those functions
    (a function mode would miss the recomputation of checkpointed blocks in backward), so a fake
    step is counted with the dtypes a GPU would hold."""

    def fp32_inputs(fn):
        def call(*args, **kwargs):
            if torch.is_autocast_enabled("cpu"):
                args, kwargs = tree_map(
                    lambda t: t.float() if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 else t, (args, kwargs))
            return fn(*args, **kwargs)
        return call

    def fp32_result(fn):
        def call(*args, **kwargs):
            if torch.is_autocast_enabled("cpu") and kwargs.get("dtype") is None:
                kwargs["dtype"] = torch.float32
            return fn(*args, **kwargs)
        return call

    patches = [(F, n, fp32_inputs) for n in ("layer_norm", "group_norm", "interpolate")]
    patches += [(o, n, fp32_result) for o in (F, torch.Tensor) for n in ("softmax", "log_softmax")]
    saved = [(o, n, getattr(o, n)) for o, n, _ in patches]
    for (o, n, wrap), (_, _, fn) in zip(patches, saved):
        setattr(o, n, wrap(fn))
    try:
        yield
    finally:
        for o, n, fn in saved:
            setattr(o, n, fn)


def networks(cfg: dict) -> dict[str, tuple[str, dict, dict, dict | None]]:
    """name -> (arch, network kwargs, train settings, loss) for every distinct network of the run."""
    from skullrecon.settings import baseline_train

    out = {"mae": (cfg["mae"]["arch"], cfg["mae"]["network"], cfg["mae"]["train"], cfg["mae"].get("loss"))}
    for m in cfg["baselines"]["methods"]:
        out[m] = (m, cfg["baselines"]["networks"][m], baseline_train(cfg, m), None)
    return out


def measure(arch: str, network: dict, train: dict, loss: dict | None, grid: int, fake: bool, steps: int = 2,
            cuda_policy: bool = False) -> dict:
    """Peak live tensor bytes of ``steps`` training steps on the CPU (bf16 autocast as configured;
    ``cuda_policy``: with the dtypes CUDA's autocast would give, see :func:`cuda_autocast_policy`)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from skullrecon.train import LossConfig, TrainConfig, build_training, train_step

    cfg = TrainConfig.from_dict(train)
    loss_cfg = LossConfig.from_dict(loss)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else _null()
    net, opt, _, loss_fn, _ = build_training({"arch": arch, "network": network, "grid": grid}, cfg, cpu, loss_cfg)
    if fake:  # fake parameters too, so AdamW's in-place updates stay in place
        for m in net.modules():
            for k, p in m._parameters.items():
                if p is not None:
                    m._parameters[k] = torch.nn.Parameter(mode.from_tensor(p), requires_grad=p.requires_grad)
            for k, b in m._buffers.items():
                if b is not None:
                    m._buffers[k] = mode.from_tensor(b)
        (group,) = opt.param_groups
        group["params"] = list(net.parameters())
    net.train()
    params = sum(p.numel() for p in net.parameters())
    start = sum(t.untyped_storage().nbytes() for t in list(net.parameters()) + list(net.buffers()))
    shape = (cfg.batch_size, 1 + (loss_cfg.region > 0)) + (grid,) * 3
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    with mode, _real_arange(fake), cuda_autocast_policy() if cuda_policy else _null():
        x = torch.zeros((cfg.batch_size, 1) + (grid,) * 3, dtype=torch.uint8)  # uint8, as the loader hands it
        y = torch.zeros(shape, dtype=torch.uint8)
        if not fake:
            gen = torch.Generator().manual_seed(0)
            x = (torch.rand(x.shape, generator=gen) < 0.1).to(torch.uint8)
            y = (torch.rand(shape, generator=gen) < 0.1).to(torch.uint8)
        with LiveBytes(start) as mem:
            # the optimiser's step apart: its peak (parameters, gradients, AdamW state, temporaries)
            # does not depend on the grid, forward + backward's is that plus the activations
            opt.register_step_pre_hook(lambda *a: setattr(mem, "phase", "opt"))
            opt.register_step_post_hook(lambda *a: setattr(mem, "phase", "fwd_bwd"))
            for _ in range(steps):
                # bf16 as on the GPU, whatever this CPU's bf16 gives (the bytes are the point); unchecked, as
                # a fake tensor has no value to check
                loss_v = train_step(net, opt, loss_fn, x, y, cpu, bool(cfg.bf16), check=False)
    finite = True if fake else bool(torch.isfinite(loss_v))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak": mem.peak, "fwd_bwd": mem.peaks["fwd_bwd"], "opt": mem.peaks["opt"], "params": params, "seconds": time.perf_counter() - t0, "finite": finite,
            "rss_delta": None if fake else rss - rss0}


@contextlib.contextmanager
def _real_arange(fake: bool):
    """MONAI reads a few small constants as values (DiceLoss: ``torch.arange(...).tolist()`` for its
    axes, SwinUNETR: ``torch.linspace(...)`` items for drop-path rates), which a fake tensor does not
    have: make those small tensors real."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    saved = {name: getattr(torch, name) for name in ("arange", "linspace")}

    def real(fn):
        def call(*a, **k):
            with unset_fake_temporarily():
                return fn(*a, **k)
        return call

    if fake:
        for name, fn in saved.items():
            setattr(torch, name, real(fn))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch, name, fn)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def run_one(config: Path, name: str, grid: int, mode: str, timeout: float) -> dict:
    """:func:`measure` in a fresh subprocess (own RSS, own limit; a failure or timeout is a row)."""
    cmd = [sys.executable, __file__, "--config", str(config), "--one", name, str(grid), mode]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over the {timeout:.0f} s limit"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": last[:160]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml")
    ap.add_argument("--networks", nargs="+", default=None)
    ap.add_argument("--grids", nargs="+", type=int, default=None, help="measured grids (default per network)")
    ap.add_argument("--target", type=int, default=None, help="grid to extrapolate to (default: the config's)")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per measurement subprocess")
    ap.add_argument("--limit-gib", type=float, default=40.0 * 1e9 / GIB, help="the card (A100 40 GB = 37.3 GiB)")
    ap.add_argument("--one", nargs=3, metavar=("NAME", "GRID", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    nets = networks(cfg)
    if args.one:  # child process: one measurement, one JSON line
        name, grid, mode = args.one
        torch.set_num_threads(max(1, torch.get_num_threads()))
        print(json.dumps(measure(*nets[name], int(grid), mode.startswith("fake"), cuda_policy=mode == "fake-cuda")))
        return 0

    from skullrecon.train import LossConfig

    target = args.target or int(cfg["preprocess"]["grid"])
    chosen = args.networks or list(nets)

    def say(text: str) -> None:
        print(f"[CPU x{torch.get_num_threads()} threads] {text}", flush=True)

    say(f"torch {torch.__version__}, config {args.config.name}, target {target}^3, peak live tensor bytes "
        f"(2 training steps, bf16 autocast on the CPU), limit {args.timeout:.0f} s per measurement")
    rows, seen = {}, {}
    for name in chosen:
        arch, network, train, loss = nets[name]
        key = json.dumps([arch, network, train["batch_size"], train["bf16"], asdict(LossConfig.from_dict(loss))],
                         sort_keys=True)
        if key in seen:  # the same network and step (the UNet baseline is the MAE's network): same bytes
            rows[name] = rows[seen[key]]
            say(f"{name:<14} the same network, settings and step as {seen[key]}: its numbers")
            continue
        seen[key] = name
        pts = []
        for g in args.grids or DEFAULT_GRIDS.get(name, DEFAULT_GRIDS["default"]):
            r = run_one(args.config, name, g, "real", args.timeout)
            if "error" in r:
                say(f"{name:<14} {g:4d}^3 measured: SKIPPED ({r['error']})")
                continue
            f = run_one(args.config, name, g, "fake", args.timeout)
            pts.append((g**3, r["fwd_bwd"], r["opt"], r["peak"]))
            say(f"{name:<14} {g:4d}^3 measured {r['peak'] / GIB:7.3f} GiB (forward+backward {r['fwd_bwd'] / GIB:.3f}, "
                f"optimiser step {r['opt'] / GIB:.3f}; RSS high-water +{r['rss_delta'] / GIB:.3f} GiB; {r['seconds']:.0f} s, "
                f"loss finite {r['finite']}); fake-tensor count {f.get('peak', float('nan')) / GIB:7.3f} GiB")
        counted = run_one(args.config, name, target, "fake", args.timeout)
        cuda = run_one(args.config, name, target, "fake-cuda", args.timeout)
        row = {"params": counted.get("params") or r.get("params"), "measured": {round(v ** (1 / 3)): p / GIB for v, *_, p in pts},
               "counted": counted.get("peak", float("nan")) / GIB, "cuda": cuda.get("peak", float("nan")) / GIB}
        if len(pts) >= 2:
            v = [p[0] for p in pts]
            fb, op = np.polyfit(v, [p[1] for p in pts], 1), np.polyfit(v, [p[2] for p in pts], 1)
            row["fit"] = max(np.polyval(fb, target**3), np.polyval(op, target**3)) / GIB
            say(f"{name:<14} fit a + b*voxels (forward+backward: a {fb[1] / GIB:.3f} GiB, b {fb[0]:.1f} B/voxel; optimiser "
                f"step: a {op[1] / GIB:.3f} GiB, b {op[0]:.1f} B/voxel) -> {target}^3 {row['fit']:7.2f} GiB "
                f"({(row['fit'] - row['counted']) / row['counted']:+.0%} vs the count)")
        else:
            say(f"{name:<14} too few grids for a fit")
        say(f"{name:<14} counted at {target}^3 (fake tensors): {row['counted']:7.2f} GiB with CPU autocast's dtypes, "
            f"{row['cuda']:7.2f} GiB with CUDA's")
        rows[name] = row

    # The GPU holds more than the count (cuDNN workspaces, the caching allocator's rounding): from
    # the one network measured on a GPU it is +x GiB or x times the count; both bounds are given.
    gpu = {n: GPU_MEASURED[n] for n in GPU_MEASURED if n in rows}
    for n, measured in gpu.items():
        r = rows[n]
        fit = f"linear fit {r['fit']:.2f} GiB ({(r['fit'] - measured) / measured:+.0%}), " if "fit" in r else ""
        say(f"{n:<14} H100 max_memory_allocated {measured:.2f} GiB: {fit}count with CUDA's dtypes {r['cuda']:.2f} GiB "
            f"({(r['cuda'] - measured) / measured:+.0%})")
    add = max((m - rows[n]["cuda"] for n, m in gpu.items()), default=0.0)
    mul = max((m / rows[n]["cuda"] for n, m in gpu.items()), default=1.0)
    say(f"GPU over the count: +{add:.2f} GiB or x{mul:.2f}; card {args.limit_gib:.1f} GiB (A100 40 GB)")
    for name, r in rows.items():
        lo, hi = r["cuda"] + add, r["cuda"] * mul
        verdict = "fits" if hi < args.limit_gib else "DOES NOT FIT" if lo >= args.limit_gib else "MAY NOT FIT"
        say(f"{name:<14} {r['params'] / 1e6:6.1f} M params, {target}^3 training on a GPU {lo:6.2f}-{hi:6.2f} GiB: "
            f"{verdict} an A100 40 GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
