"""What a first stage gains at test time alone, with no new training set: its prediction averaged with its prediction
on the mirrored skull, averaged with a second MAE's, or after a few steps of its own self-supervised training on the
defective skull it is given (test-time training, as TTT-MAE; the MAE still never sees a defect: its masks cut the
bone the skull has, and the region the first stage fills, 2 voxels wider, is left out of the loss).

Issue 37 asks for a better shape than the first stage's; these are the cheap ways to one that need no GPU. Each
variant is scored as ``skullrecon evaluate`` scores a model (``skullrecon.evaluate.score_probabilities``); the MAE is
rebuilt from its weights for each case of test-time training. Choose on the trainers' validation skulls:

    python bench/test_time.py --model mae_d_gpu --partner mae_nd_gpu --config realdata/run-gpu.yaml \
        --data ../shared/data/skullfix/training_set --ids 003 006 026 047 --out bench/results/test-time/gpu.csv

Prints the mean of each variant and its paired difference to the first stage alone.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml


def mirrored(net: torch.nn.Module, grid_input: np.ndarray, dev: torch.device) -> np.ndarray:
    """The prediction on the skull mirrored left-right (axis 0, the augmentations' plane), mirrored back."""
    from skullrecon.infer import predict

    return np.flip(predict(net, np.ascontiguousarray(np.flip(grid_input, 0)), dev), 0)


def test_time_trained(net: torch.nn.Module, grid_input: np.ndarray, prob: np.ndarray, spacing, mask_cfg,
                      steps: int, lr: float, bf16: bool, seed: int = 0) -> torch.nn.Module:
    """``net`` after ``steps`` AdamW steps (batch 2) of the MAE's own loss (soft Dice of the bone it adds) on the
    defective skull, its masks cut outside the region the first stage fills (where the skull's bone is unknown)."""
    from monai.losses import DiceLoss
    from scipy import ndimage

    from skullrecon.masking import apply_mask, make_mask

    bone = grid_input > 0.5
    unknown = ndimage.binary_dilation((prob >= 0.5) & ~bone, iterations=2)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    dice = DiceLoss(sigmoid=False)
    target = torch.from_numpy(bone.astype(np.float32))[None, None].expand(2, -1, -1, -1, -1)
    known = torch.from_numpy((~unknown).astype(np.float32))[None, None]
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    net.train()
    for _ in range(steps):
        cut = [apply_mask(bone, make_mask(bone, spacing, mask_cfg, rng) & ~unknown) for _ in range(2)]
        x = torch.from_numpy(np.stack(cut).astype(np.float32))[:, None]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        free = (1 - x) * known  # the loss where the input lacks bone that the skull has or may have
        loss = dice(torch.sigmoid(logits.float()) * free, target * free)
        if not torch.isfinite(loss):
            raise SystemExit(f"test-time training: non-finite loss at lr {lr}")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def main() -> None:
    from skullrecon.evaluate import cases_of, score_probabilities
    from skullrecon.infer import predict, stored_probabilities
    from skullrecon.io import read_volume
    from skullrecon.masking import MaskConfig
    from skullrecon.models import load_model
    from skullrecon.preprocess import preprocess_volume
    from skullrecon.release import resolve_model
    from skullrecon.train import cpu_bf16_sound

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the released MAE (first stage)")
    ap.add_argument("--partner", help="a second released MAE to average with (the ensemble variant)")
    ap.add_argument("--config", type=Path, required=True, help="the run whose MAE masks test-time training draws")
    ap.add_argument("--data", type=Path, required=True, help="a split folder (defective_skull/, implant/)")
    ap.add_argument("--ids", nargs="*", help="case ids (default all)")
    ap.add_argument("--steps", type=int, nargs="*", default=[10, 30], help="test-time training steps")
    ap.add_argument("--lrs", type=float, nargs="*", default=[1e-3, 1e-4, 2e-5], help="test-time training lrs")
    ap.add_argument("--out", type=Path, required=True, help="per-case CSV")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "2")))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    path, sha = resolve_model(args.model)
    net, spec = load_model(path, dev, need_postprocess=True, sha256=sha)
    partner = None
    if args.partner:
        partner_path, partner_sha = resolve_model(args.partner)
        partner = load_model(partner_path, dev, need_postprocess=True, sha256=partner_sha)[0]
    mask_cfg = MaskConfig.from_dict(yaml.safe_load(args.config.read_text())["mae"]["masking"])
    bf16 = cpu_bf16_sound()
    rows = []
    for case in cases_of(args.data, args.ids):
        defective, gt = read_volume(case.defective), read_volume(case.implant)
        grid_input, geom = preprocess_volume(defective.array, defective.spacing, spec["grid"], spec["margin"])
        prob = predict(net, grid_input, dev)
        variants = {"single": prob, "mirror": (prob + mirrored(net, grid_input, dev)) / 2}
        if partner is not None:
            variants["ensemble"] = (prob + predict(partner, grid_input, dev)) / 2
        row = {"case": case.name, "model": args.model, "partner": args.partner or "", "bf16": bf16}
        for lr in args.lrs:
            adapted, done, t = load_model(path, dev, need_postprocess=True)[0], 0, time.perf_counter()
            for steps in sorted(args.steps):
                adapted = test_time_trained(adapted, grid_input, prob, geom.grid_spacing, mask_cfg, steps - done, lr,
                                            bf16, seed=steps)
                done = steps
                variants[f"ttt_lr{lr:g}_{steps}"] = predict(adapted, grid_input, dev)
                row[f"ttt_lr{lr:g}_{steps}_seconds"] = time.perf_counter() - t
        for key, p in variants.items():
            p = stored_probabilities(np.ascontiguousarray(p)).astype(np.float32)
            m = score_probabilities(p, grid_input, geom, defective, gt, spec, dev)
            row[f"{key}_dsc"], row[f"{key}_hd95"] = m["dsc"], m["hd95"]
        rows.append(row)
        print(case.name, " ".join(f"{k} {row[k + '_dsc']:.3f}/{row[k + '_hd95']:.2f}" for k in variants), flush=True)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    keys = [c[:-4] for c in table.columns if c.endswith("_dsc")]
    print(f"{'variant':<22} DSC    HD95   DSC-single HD95-single  ({len(table)} cases)")
    for k in keys:
        print(f"{k:<22} {table[k + '_dsc'].mean():.3f}  {table[k + '_hd95'].mean():.2f}   "
              f"{(table[k + '_dsc'] - table['single_dsc']).mean():+.4f}    "
              f"{(table[k + '_hd95'] - table['single_hd95']).mean():+.3f}")


if __name__ == "__main__":
    main()
