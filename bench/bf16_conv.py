"""oneDNN's bf16 3-D convolution on this CPU against float32: the minimal case behind
docs/upstream/onednn-bf16-conv3d-wgrad.md, and what bf16 would save here.

    python bench/bf16_conv.py                                   # this CPU's own kernels
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python bench/bf16_conv.py   # an AMX Xeon as an AMD EPYC with AVX-512 bf16
    python bench/bf16_conv.py --speed realdata/run.yaml         # CPU-s per training step, bf16 against float32

Per shape (3^3 kernel, padding 1, batch 1, ``channels`` in and out): how many of ``--tries`` bf16
forward + backward passes gave an output, input gradient or weight gradient that is not finite or
more than 5 % (of the largest value) off float32's on the same bf16-rounded values, and the
largest such error. ``--speed``: the config's MAE and baselines stepped as the trainer would, one
thread, with bf16 forced on (``cpu_bf16_sound`` patched: the numbers, not the results, are
wanted) against float32 (with the config's channels-last), median CPU-seconds per step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from skullrecon.train import _conv_and_grads

SHAPES = [(2, 2, 2), (2, 4, 4), (2, 2, 8), (4, 4, 2), (4, 2, 4), (1, 1, 1), (3, 3, 3), (4, 4, 4), (8, 8, 8)]
NAMES = ("output", "input gradient", "weight gradient")


def faults(channels: int, shape: tuple[int, ...], tries: int) -> dict[str, tuple[int, float]]:
    """Per result: (tries wrong, largest relative error) of bf16 against float32."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, channels) + shape, generator=gen).bfloat16()
    w = (0.05 * torch.randn((channels, channels, 3, 3, 3), generator=gen)).bfloat16()
    g = torch.randn((1, channels) + shape, generator=gen).bfloat16()
    ref = _conv_and_grads(F.conv3d, x.float(), w.float(), g.float())
    out = {n: [0, 0.0] for n in NAMES}
    for _ in range(tries):
        for n, a, b in zip(NAMES, _conv_and_grads(F.conv3d, x, w, g), ref):
            err = float((a.float() - b).abs().max() / b.abs().max())
            wrong = not bool(torch.isfinite(a).all()) or err > 0.05
            out[n][0] += wrong
            out[n][1] = max(out[n][1], err if err == err else float("inf"))
    return {n: (v[0], v[1]) for n, v in out.items()}


def speed(config: Path, steps: int) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import skullrecon.train as train
    from cpu_time import jobs
    from gpu import time_steps

    cfg = yaml.safe_load(config.read_text())
    grid = cfg["preprocess"]["grid"]
    for job in jobs(cfg):
        if job["name"] == "mae_nd":
            continue  # the same network as mae_d
        row = {}
        for label, sound in (("bf16", True), ("float32", False)):
            train.cpu_bf16_sound = lambda sound=sound: sound
            r = time_steps(job["arch"], job["network"], {**job["train"], "cpu_bf16": True}, grid, torch.device("cpu"),
                           warmup=1, repeats=steps, loss=job["loss"], clock=time.process_time)
            row[label] = r["step_s"]
        print(f"{job['name']:<14} step  bf16 {row['bf16']:6.3f} CPU-s  float32 {row['float32']:6.3f} CPU-s  "
              f"float32 / bf16 {row['float32'] / row['bf16']:.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tries", type=int, default=20)
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32, 256])
    ap.add_argument("--shapes", nargs="+", default=["x".join(map(str, s)) for s in SHAPES])
    ap.add_argument("--speed", type=Path, help="a run config: time its trainings' steps in bf16 and float32")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import os
    print(f"# torch {torch.__version__}, oneDNN max ISA {os.environ.get('ONEDNN_MAX_CPU_ISA', 'the CPU’s own')}, "
          f"native bf16 (oneDNN): {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, one thread", flush=True)
    if args.speed:
        speed(args.speed, args.steps)
        return 0
    for c in args.channels:
        for s in args.shapes:
            shape = tuple(int(v) for v in s.split("x"))
            f = faults(c, shape, args.tries)
            print(f"{c:4d} channels  {s:<6}  " + "  ".join(f"{n} {k}/{args.tries} (max err {e:.2g})"
                                                          for n, (k, e) in f.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
