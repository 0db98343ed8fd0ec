"""One trainer for both tasks: the self-supervised MAE and the supervised baselines.

* ``reconstruct`` (MAE): healthy skull -> random masks removed -> network -> whole skull.
* ``implant`` (baselines): defective skull -> network -> implant.

Soft Dice loss (for the MAE optionally also over the removed patches, :class:`LossConfig`),
AdamW, ExponentialLR, bf16 autocast on GPU, a per-epoch CSV log of loss and validation DSC
(for the MAE also the DSC of the bone it put back, the quantity an implant is made of), a guard
that applies no step whose loss or gradients are not finite (counted as ``skipped_steps``; a run
that keeps making them, or whose validation output is not finite, stops with one line), and
resumable checkpoints (model, optimiser, scheduler, epoch, RNG state) kept in
a folder Snakemake never deletes, so a job killed at a time limit continues where it stopped.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from skullrecon.augment import AugmentConfig, augment_skull
from skullrecon.masking import MaskConfig, apply_mask, make_mask
from skullrecon.models import network_for, pick_device, save_model
from skullrecon.preprocess import load_case
from skullrecon.runlog import JobStopped
from skullrecon.settings import from_mapping

__all__ = ["TrainConfig", "LossConfig", "MaskedSkullDataset", "PairDataset", "EpochSampler", "make_loader",
           "build_training", "train_step", "train_model", "dice_score", "restored_dice", "NonFiniteStep",
           "TrainingStopped", "StepGuard", "step_problem", "bf16_conv_faults", "cpu_bf16_faults",
           "cpu_bf16_sound"]

TASKS = ("reconstruct", "implant", "refine")  # refine: the second stage (skullrecon.refine)
# A training stops (TrainingStopped) after this many non-finite steps in a row, or when more than
# this share of an epoch's steps (and at least that many) were skipped: one bad step is skipped and
# logged (a bf16 overflow on a GPU can happen once), a run that keeps producing them is broken.
MAX_SKIPPED_IN_A_ROW = 3
MAX_SKIPPED_SHARE = 0.2
SCHEDULES = ("exponential", "cosine")
_LATER_SETTINGS = ("cpu_bf16", "schedule", "warmup_epochs", "ema", "coarse_epochs", "cpu_channels_last",
                   "crop")


@dataclass
class TrainConfig:
    """Optimisation settings (paper: AdamW lr 1e-3, wd 1e-2, ExponentialLR 0.995, Soft Dice).

    Args:
        epochs: passes over the training set.
        batch_size: cases per step.
        lr, weight_decay: AdamW settings.
        gamma: ExponentialLR decay per epoch.
        val_fraction: share of training cases held out for the per-epoch validation DSC.
        checkpoint_every: epochs between checkpoints (the last epoch always writes one).
        num_workers: DataLoader worker processes (mask generation runs there).
        seed: seeds data split, masks, shuffling and weights.
        bf16: autocast to bfloat16 on a GPU.
        cpu_bf16: autocast to bfloat16 on a CPU too, where it computes bf16 natively (AMX or
            AVX-512 bf16: about 2.7x fewer CPU-seconds per 64^3 step on this project's Xeon) and
            correctly (:func:`cpu_bf16_sound`: not an AMD EPYC with AVX-512 bf16 and oneDNN 3.12,
            whose 3-D weight gradients at a depth of 2 are garbage); ignored elsewhere, where
            emulated bf16 would be slower than float32.
        cpu_channels_last: on a CPU that trains in float32 (no native bf16), keep weights and batches
            in the channels-last 3-D memory format: oneDNN's convolutions run faster on it (on an AMD
            EPYC Zen 2 a ``realdata/`` MAE epoch 33.4 -> 30.4 CPU-s, a SegResNet epoch 95 -> 84; the
            MAE's bare step 1.30 -> 1.15 s on this project's Xeon in float32) but slower in bf16 on the
            Xeon (0.48 -> 0.53 s), so bf16 training ignores it. The saved network is in the default
            layout either way.
        schedule: ``exponential`` (``gamma`` per epoch, the paper's) or ``cosine`` (linear warm-up
            over ``warmup_epochs``, then cosine from ``lr`` to 0 at the last epoch).
        warmup_epochs: the cosine schedule's warm-up.
        ema: decay of an exponential moving average of the weights (0: none); when set, validation
            and the saved model use the averaged weights.
        coarse_epochs: the first epochs train on the grid halved (progressive resolution: a 2x2x2
            average of the binary grid, thresholded at 0.5; masks drawn in millimetres as before),
            the rest on the full grid; the network is fully convolutional. Validation is always on
            the full grid. MAE only.
        crop: train on ``crop``^3 windows of the grid (0: the whole grid), nnU-Net's patch
            training: each window is centred on a random voxel of what is to be learned (a removed
            voxel for the MAE, an implant voxel for a baseline), moved inside the grid. A step
            costs about the window's share of the voxels; validation, the saved network and
            inference see the whole grid (the network is fully convolutional). A multiple of the
            network's total stride.
    """

    epochs: int = 1200
    batch_size: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-2
    gamma: float = 0.995
    val_fraction: float = 0.1
    checkpoint_every: int = 10
    num_workers: int = 0
    seed: int = 0
    bf16: bool = True
    cpu_bf16: bool = False
    schedule: str = "exponential"
    warmup_epochs: int = 0
    ema: float = 0.0
    coarse_epochs: int = 0
    cpu_channels_last: bool = False
    crop: int = 0

    def __post_init__(self) -> None:
        if self.crop < 0:
            raise ValueError(f"crop must be >= 0 (0: the whole grid), got {self.crop}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if not 0 <= self.coarse_epochs < self.epochs or not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"coarse_epochs and warmup_epochs must be in [0, epochs), got {self.coarse_epochs}, "
                             f"{self.warmup_epochs} for {self.epochs} epochs")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return from_mapping(cls, d, "training")


@dataclass
class LossConfig:
    """The MAE's loss: ``whole`` x soft Dice over the whole skull + ``region`` x soft Dice inside
    the removed patches (prediction and skull both restricted to the mask) + ``added`` x soft Dice
    of the bone the network adds (prediction and skull both restricted to where the input has no
    bone: the implant of a reconstruction, what the baselines' loss scores, and what
    ``val_restored_dsc`` measures) + ``added_ce`` x binary cross-entropy over the same voxels
    (nnU-Net's Dice + CE: a gradient at every voxel, where soft Dice's is spread by its
    denominator) + ``region_ce`` x binary cross-entropy inside the removed patches only (where
    bone and air are both to be found; outside them every voxel the input lacks is air, and that
    majority can drive a cross-entropy to add nothing, docs/ablation.md). With ``added`` or
    ``added_ce`` the network's output keeps the input's bone (the copying is built in, not
    learned; :class:`~skullrecon.models.KeepInput`).

    Whole-skull Dice alone is dominated by the bone the network only has to copy (the removed
    bone is a few percent of the skull); the region term scores the reconstruction of the
    patches themselves, the paper's "reconstruct the patches". Baselines ignore this.
    """

    whole: float = 1.0
    region: float = 0.0
    added: float = 0.0
    added_ce: float = 0.0
    region_ce: float = 0.0

    def __post_init__(self) -> None:
        weights = (self.whole, self.region, self.added, self.added_ce, self.region_ce)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"loss weights must be >= 0 and not all 0, got whole={self.whole}, "
                             f"region={self.region}, added={self.added}, added_ce={self.added_ce}, "
                             f"region_ce={self.region_ce}")

    def as_spec(self) -> dict[str, float]:
        """The weights as model files and checkpoint fingerprints record them (the later terms
        only when used, so that files and checkpoints made before they existed read the same)."""
        later = ("added", "added_ce", "region_ce")
        return {k: v for k, v in asdict(self).items() if k not in later or v}

    @property
    def needs_mask(self) -> bool:
        """Whether the loss reads the removed patches (the target's second channel)."""
        return self.region + self.region_ce > 0

    @property
    def keeps_input(self) -> bool:
        """Whether the network's output keeps the input's bone (:class:`~skullrecon.models.KeepInput`):
        with the ``added`` terms nothing else teaches it to."""
        return self.added + self.added_ce > 0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> LossConfig:
        return from_mapping(cls, d or {}, "loss")


class MaskedSkullDataset(Dataset):
    """Healthy skulls with freshly drawn masks: (masked skull, whole skull).

    With ``with_mask`` the target has a second channel, the mask (the removed patches), which
    the region term of the loss needs. Masks depend only on (seed, epoch, index), so they are
    reproducible whatever the worker layout and a resumed run sees the same masks as an
    uninterrupted one. The epoch comes with the index (``ds[epoch, i]``, from
    :class:`EpochSampler`), so persistent workers see it too; ``ds[i]`` uses ``self.epoch``.
    """

    def __init__(self, files: Sequence[Path], mask_cfg: MaskConfig, seed: int,
                 augment: AugmentConfig | None = None, fixed: bool = False, with_mask: bool = False,
                 coarse_epochs: int = 0, crop: int = 0):
        self.files, self.mask_cfg, self.seed = list(files), mask_cfg, seed
        self.augment, self.fixed, self.epoch, self.with_mask = augment, fixed, 0, with_mask
        self.coarse_epochs, self.crop = coarse_epochs, crop

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        arrays, geom = load_case(self.files[i])
        skull, spacing = arrays["complete"].astype(bool), geom.grid_spacing
        if epoch < self.coarse_epochs and not self.fixed:
            skull, spacing = halve_grid(skull), tuple(2 * s for s in spacing)
        rng = np.random.default_rng([self.seed, 0 if self.fixed else epoch + 1, i])
        if self.augment is not None and not self.fixed:
            skull = augment_skull(skull, self.augment, rng)
        mask = make_mask(skull, spacing, self.mask_cfg, rng)
        masked = apply_mask(skull, mask)
        if self.crop:
            window = crop_window(mask & skull, self.crop, rng)
            skull, mask, masked = skull[window], mask[window], masked[window]
        if self.with_mask:
            return _tensor(masked), torch.cat([_tensor(skull), _tensor(mask)])
        return _tensor(masked), _tensor(skull)


def halve_grid(skull: np.ndarray) -> np.ndarray:
    """A binary grid at half the resolution: each 2x2x2 block set where at least half of it is
    (the preprocessing's area average and 0.5 threshold, from the grid instead of the original)."""
    d, h, w = (n - n % 2 for n in skull.shape)
    blocks = skull[:d, :h, :w].reshape(d // 2, 2, h // 2, 2, w // 2, 2)
    return blocks.sum(axis=(1, 3, 5), dtype=np.uint8) >= 4


def crop_window(target: np.ndarray, size: int, rng: np.random.Generator) -> tuple[slice, ...]:
    """A ``size``^3 window of the grid centred on a random voxel of ``target`` (the grid's centre
    where ``target`` is empty), moved to lie inside the grid; the whole axis where the grid is
    smaller than ``size``."""
    voxels = np.flatnonzero(target)
    centre = (np.unravel_index(voxels[rng.integers(len(voxels))], target.shape) if len(voxels)
              else tuple(n // 2 for n in target.shape))
    return tuple(slice(max(0, min(c - size // 2, n - size)), max(0, min(c - size // 2, n - size)) + size)
                 for c, n in zip(centre, target.shape))


class PairDataset(Dataset):
    """Supervised pairs from preprocessed cases: (defective skull, implant)."""

    def __init__(self, files: Sequence[Path], crop: int = 0, seed: int = 0):
        self.files, self.epoch, self.crop, self.seed = list(files), 0, crop, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        arrays, _ = load_case(self.files[i])
        defective, implant = arrays["defective"], arrays["implant"]
        if self.crop:
            window = crop_window(implant.astype(bool), self.crop, np.random.default_rng([self.seed, epoch + 1, i]))
            defective, implant = defective[window], implant[window]
        return _tensor(defective), _tensor(implant)


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A binary grid as a (1, D, H, W) uint8 tensor: a quarter of float32 to hand from a worker
    to the trainer and to the GPU; :func:`train_step` makes it float on the device."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))[None]


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled ``(epoch, index)`` keys, in the order of a ``DataLoader(shuffle=True)`` seeded per epoch.

    Runs in the main process, so with persistent workers the epoch still reaches the dataset
    (an attribute set on the dataset would not reach the workers' copies).
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        # the draw a DataLoader made from its generator (its workers' base seed) before shuffling,
        # so the order is the one earlier versions trained with
        torch.empty((), dtype=torch.int64).random_(generator=gen)
        order = torch.randperm(self.n, generator=gen)
        return iter([(self.epoch, int(i)) for i in order])


def make_loader(ds: Dataset, cfg: TrainConfig, device: torch.device) -> tuple[DataLoader, EpochSampler]:
    """The training loader: workers kept across epochs, pinned memory for a GPU.

    Set ``sampler.epoch`` before each epoch.
    """
    sampler = EpochSampler(len(ds), cfg.seed)
    workers = cfg.num_workers
    loader = DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers, drop_last=False,
                        persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if workers > 0 else None,
                        generator=torch.Generator().manual_seed(cfg.seed))  # workers' seeds; not the global RNG
    return loader, sampler


def build_training(spec: dict[str, Any], cfg: TrainConfig, device: torch.device, loss_cfg: LossConfig | None = None):
    """Network, AdamW, the per-epoch learning-rate schedule, the loss and whether bf16 autocast
    is on, as trained (the network channels-last where :func:`uses_channels_last` says so: pass
    that to :func:`train_step` too)."""
    bf16 = uses_bf16(cfg, device)
    net = network_for(spec).to(device)
    if uses_channels_last(cfg, device, bf16):  # before AdamW's state exists: its moments follow the parameters' layout
        net = net.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: cosine_factor(e, cfg.epochs, cfg.warmup_epochs))
    else:
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)
    return net, opt, sched, _loss_fn(loss_cfg or LossConfig()), bf16


def cosine_factor(epoch: int, epochs: int, warmup: int) -> float:
    """The learning rate of ``epoch`` (0-based) over the peak: linear warm-up to 1 over ``warmup``
    epochs, then half a cosine that would reach 0 one epoch after the last."""
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast: on a GPU with ``bf16``; on a CPU with ``bf16`` and ``cpu_bf16`` where the
    CPU has bf16 arithmetic (oneDNN's own check) and computes it correctly (:func:`cpu_bf16_sound`)."""
    if not cfg.bf16:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cfg.cpu_bf16 and cpu_bf16_sound()


# 3-D convolutions (3^3 kernel, padding 1) at the feature maps where oneDNN 3.12's avx512_core_bf16
# weight gradient came out as garbage or NaN (AMD EPYC with AVX-512 bf16 and no AMX; reproduced on
# an AMX Xeon with ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16): a depth of 2, e.g. the deepest level of a
# 4-stride UNet at 32^3 or of SwinUNETR at 64^3. 2x4x4 failed 20 of 20 tries, 2^3 at 16 channels 17
# of 20 (docs/upstream/onednn-bf16-conv3d-wgrad.md); three tries of each find it.
_BF16_PROBES = ((32, (2, 4, 4)), (16, (2, 2, 2)), (32, (2, 2, 8)))


def bf16_conv_faults(conv: Callable = F.conv3d, tries: int = 3) -> list[str]:
    """The probe shapes at which a bf16 3-D convolution's output or gradients differ from float32's
    on the same (bf16-rounded) values by more than bf16's rounding can explain: a relative error of
    the largest value above 5 % (bf16 keeps 8 bits: sound results are within about 0.5 %)."""
    gen = torch.Generator().manual_seed(0)
    faults = []
    for channels, shape in _BF16_PROBES:
        x = torch.randn((1, channels) + shape, generator=gen).bfloat16()
        w = (0.05 * torch.randn((channels, channels, 3, 3, 3), generator=gen)).bfloat16()
        grad_out = torch.randn((1, channels) + shape, generator=gen).bfloat16()
        reference = _conv_and_grads(conv, x.float(), w.float(), grad_out.float())
        for _ in range(tries):
            got = _conv_and_grads(conv, x, w, grad_out)
            bad = [name for name, a, b in zip(("output", "input gradient", "weight gradient"), got, reference)
                   if not bool(torch.isfinite(a).all())
                   or float((a.float() - b).abs().max()) > 0.05 * float(b.abs().max())]
            if bad:
                faults.append(f"{channels} channels at {'x'.join(map(str, shape))}: {', '.join(bad)}")
                break
    return faults


def _conv_and_grads(conv: Callable, x: torch.Tensor, w: torch.Tensor, grad_out: torch.Tensor):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    out = conv(x, w, padding=1)
    out.backward(grad_out)
    return out.detach(), x.grad, w.grad


@functools.lru_cache(maxsize=None)
def cpu_bf16_faults() -> tuple[str, ...]:
    """:func:`bf16_conv_faults` of this CPU's own convolutions, once per process (a few
    milliseconds); none where it has no native bf16 (oneDNN's check), which is not used there."""
    return tuple(bf16_conv_faults()) if torch.ops.mkldnn._is_mkldnn_bf16_supported() else ()


def cpu_bf16_sound() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check) and its bf16 convolutions agree
    with float32 (:func:`cpu_bf16_faults`)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and not cpu_bf16_faults()


def uses_channels_last(cfg: TrainConfig, device: torch.device, bf16: bool) -> bool:
    """Channels-last 3-D: asked for (``cpu_channels_last``), on a CPU, training in float32."""
    return device.type == "cpu" and cfg.cpu_channels_last and not bf16


def _layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last_3d) if channels_last else t


def make_ema(net: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of the weights (buffers too), updated after every step."""
    if not decay:
        return None
    return torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay),
                                               use_buffers=True)


class NonFiniteStep(ArithmeticError):
    """A training step whose loss or gradients were not finite; it was not applied."""


def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable, x: torch.Tensor,
               y: torch.Tensor, device: torch.device, bf16: bool, channels_last: bool = False,
               check: bool = True) -> torch.Tensor:
    """One optimisation step on a batch, as the trainer runs it (bf16 autocast when ``bf16``; the
    batch channels-last when ``channels_last``); returns the loss.

    With ``check`` (the trainer's way) a step whose loss or gradients are not finite is not
    applied: the gradients are dropped, the weights and AdamW's moments stay as they were, and
    :class:`NonFiniteStep` says what was not finite. The check waits for the GPU once per step.
    Without it (the benchmarks, which count what a step holds) the step is applied as it is."""
    x = _layout(x.to(device, non_blocking=True).float(), channels_last)
    y = y.to(device, non_blocking=True).float()
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = net(x)
    loss = loss_fn(logits.float(), y, x)
    loss.backward()
    if check:
        problem = step_problem(loss, net)
        if problem is not None:
            opt.zero_grad(set_to_none=True)
            raise NonFiniteStep(problem)
    opt.step()
    return loss.detach()


def step_problem(loss: torch.Tensor, net: torch.nn.Module) -> str | None:
    """What was not finite in a step (``None``: nothing). One reduction over every gradient: the
    float32 norm also overflows on huge finite garbage (above about 1e19), which AdamW's squared
    moment would turn into infinity; the parameter is named only when something is wrong."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False) if grads else loss.new_zeros(())
    if bool(torch.isfinite(loss.detach()) & torch.isfinite(total)):
        return None
    if not bool(torch.isfinite(loss.detach())):
        return f"loss ({float(loss.detach()):g})"
    name = next((n for n, p in net.named_parameters()
                 if p.grad is not None and not bool(torch.isfinite(p.grad.float().norm()))), "?")
    return f"gradient (first: {name})"


class TrainingStopped(JobStopped):
    """A training that stopped because its steps or its validation were not finite."""


class StepGuard:
    """Counts the steps :func:`train_step` refused, logs each, and stops the training
    (:class:`TrainingStopped`, one line) after ``MAX_SKIPPED_IN_A_ROW`` in a row or more than
    ``MAX_SKIPPED_SHARE`` of an epoch."""

    def __init__(self, method: str, checkpoint: Path, log: Callable[[str], None]):
        self.method, self.checkpoint, self.log = method, checkpoint, log
        self.in_a_row, self.in_epoch, self.steps = 0, 0, 0

    def start_epoch(self) -> None:
        self.in_epoch, self.steps = 0, 0

    def applied(self) -> None:
        self.in_a_row, self.steps = 0, self.steps + 1

    def skipped(self, epoch: int, step: int, problem: str) -> None:
        self.in_a_row, self.in_epoch, self.steps = self.in_a_row + 1, self.in_epoch + 1, self.steps + 1
        self.log(f"{self.method}: epoch {epoch + 1}, step {step + 1}: non-finite {problem}; step skipped")
        if self.in_a_row >= MAX_SKIPPED_IN_A_ROW:
            self.stop(epoch, f"{self.in_a_row} steps in a row had a non-finite {problem}")

    def end_epoch(self, epoch: int) -> None:
        if self.in_epoch >= MAX_SKIPPED_IN_A_ROW and self.in_epoch > MAX_SKIPPED_SHARE * self.steps:
            self.stop(epoch, f"{self.in_epoch} of its {self.steps} steps had a non-finite loss or gradient")

    def stop(self, epoch: int, what: str) -> None:
        kept = _checkpoint_epoch(self.checkpoint)
        kept_text = (f"the last good checkpoint ({self.checkpoint}, epoch {kept}) is kept and a rerun resumes from it"
                     if kept else "no checkpoint was written yet")
        raise TrainingStopped(f"{self.method}: training stopped in epoch {epoch + 1}: {what}; {kept_text}; "
                              "try a lower lr, bf16: false (cpu_bf16: false on a CPU) or another seed")


def _checkpoint_epoch(path: Path) -> int:
    """The epoch of the checkpoint at ``path`` (0 where there is none to resume)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - absent or unreadable: nothing to resume
        return 0


def dice_score(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard DSC per case of thresholded predictions (empty vs empty counts as 1)."""
    pred = (logits > 0).float().flatten(1)
    tgt = (target > 0.5).float().flatten(1)
    inter = (pred * tgt).sum(1)
    denom = pred.sum(1) + tgt.sum(1)
    return torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom))


def restored_dice(logits: torch.Tensor, masked: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DSC per case of the bone the MAE added: (prediction minus input) vs (skull minus input).

    This is the implant of a reconstruction before any post-processing, so it is what the MAE's
    validation should track; whole-skull DSC is high even for a network that copies its input.
    """
    given = masked > 0.5
    return dice_score(torch.where(given, torch.full_like(logits, -1.0), logits),
                      ((target > 0.5) & ~given).float())


def _loss_fn(cfg: LossConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Soft Dice (MONAI) over the whole target, plus over the mask region when asked."""
    from monai.losses import DiceLoss

    whole, region = DiceLoss(sigmoid=True), DiceLoss(sigmoid=False)

    def loss(logits: torch.Tensor, target: torch.Tensor, given: torch.Tensor | None = None) -> torch.Tensor:
        if target.shape[1] == 1 and not cfg.keeps_input:
            return whole(logits, target)
        skull = target[:, :1]
        value = cfg.whole * whole(logits, skull) if cfg.whole else 0.0
        mask = target[:, 1:] if cfg.needs_mask else None
        if cfg.region:
            value = value + cfg.region * region(torch.sigmoid(logits) * mask, skull * mask)
        if cfg.region_ce:
            ce = F.binary_cross_entropy_with_logits(logits, skull, reduction="none")
            value = value + cfg.region_ce * (ce * mask).sum() / mask.sum().clamp(min=1)
        free = 1 - given if cfg.keeps_input else None  # where the input has no bone
        if cfg.added:
            value = value + cfg.added * region(torch.sigmoid(logits) * free, skull * free)
        if cfg.added_ce:
            ce = F.binary_cross_entropy_with_logits(logits, skull, reduction="none")
            value = value + cfg.added_ce * (ce * free).sum() / free.sum().clamp(min=1)
        return value

    return loss


def skull_of(file: Path) -> tuple[str, str]:
    """The skull a preprocessed case comes from: its folder and id (``<kind>_<id>`` -> ``<id>``), so that the
    five SkullBreak kinds cut into one skull count as one skull."""
    return str(file.parent), file.stem.rsplit("_", 1)[-1]


def _split(files: Sequence[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Training and validation cases, whole skulls to one side: a skull whose bilateral defect validates
    must not train with its fronto-orbital one (the validation would score a skull the network has seen,
    and the epochs chosen on it would favour memorising skulls). With one case per skull (SkullFix, the
    healthy skulls) this is the split by case it always was: the same draw over the same order."""
    files = sorted(files, key=lambda f: (skull_of(Path(f)), str(f)))
    skulls = list(dict.fromkeys(skull_of(Path(f)) for f in files))
    n_val = int(round(len(skulls) * fraction)) if len(skulls) > 1 else 0
    n_val = min(max(n_val, 1 if fraction > 0 and len(skulls) > 1 else 0), len(skulls) - 1)
    order = np.random.default_rng(seed).permutation(len(skulls))
    val = {skulls[int(i)] for i in order[:n_val]}
    return ([f for f in files if skull_of(Path(f)) not in val], [f for f in files if skull_of(Path(f)) in val])


def _fingerprint(spec: dict, cfg: TrainConfig, files: Sequence[Path]) -> str:
    """What a checkpoint must agree with to be resumed: every setting but the epoch count (a
    longer exponential run continues a shorter one; a cosine schedule depends on it), and the
    settings added after the first release only where they are not at their defaults, so that
    older checkpoints still resume."""
    skip = {"checkpoint_every", "num_workers"} | ({"epochs"} if cfg.schedule == "exponential" else set())
    defaults = TrainConfig()
    settings = {k: v for k, v in asdict(cfg).items()
                if k not in skip and not (k in _LATER_SETTINGS and v == getattr(defaults, k))}
    blob = json.dumps({"spec": spec, "cfg": settings, "files": [Path(f).name for f in sorted(files)]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_model(
    task: str,
    files: Sequence[Path],
    out_path: str | Path,
    spec: dict[str, Any],
    cfg: TrainConfig,
    checkpoint_dir: str | Path,
    log_csv: str | Path,
    mask_cfg: MaskConfig | None = None,
    augment: AugmentConfig | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
    progress: bool = True,
    loss: LossConfig | None = None,
    refine: Any = None,
    first_stage: Any = None,
) -> dict[str, Any]:
    """Train a network and write a self-contained model file.

    Args:
        task: ``reconstruct`` (MAE on healthy skulls, needs ``mask_cfg``) or ``implant``.
        files: preprocessed ``.npz`` cases (``healthy/*.npz`` or ``cases/*.npz``).
        out_path: the final model file (written only when training completes).
        spec: architecture and pipeline settings stored in the model file (``arch``,
            ``network``, ``grid`` ...).
        checkpoint_dir: where ``last.pt`` is kept between epochs; an existing compatible
            checkpoint is resumed.
        log_csv: per-epoch ``epoch, train_loss, val_dsc, val_restored_dsc, lr, seconds``
            (``val_restored_dsc``: :func:`restored_dice` for the MAE, equal to ``val_dsc`` for
            the baselines, whose output is the implant).
        loss: the MAE's loss weights (default: whole-skull soft Dice only).
        refine: the second stage's :class:`~skullrecon.refine.RefineConfig` (task ``refine``, with ``mask_cfg``).
        first_stage: for ``refine``, a first-stage ``(network, spec)`` whose outputs it learns from (None: simulated).
    Returns:
        a summary (epochs run, resumed epoch, final validation DSC).
    """
    from tqdm import tqdm

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task in ("reconstruct", "refine") and mask_cfg is None:
        raise ValueError(f"task {task!r} needs a mask configuration")
    if task == "refine" and refine is None:
        raise ValueError("task 'refine' needs its RefineConfig")
    if not files:
        raise ValueError("no training cases given")
    dev = pick_device(device)
    torch.manual_seed(cfg.seed)
    train_files, val_files = _split(files, cfg.val_fraction, cfg.seed)
    loss_cfg = loss or LossConfig()
    if task == "reconstruct":
        if loss_cfg.keeps_input:
            spec = {**spec, "keep_input": True}
        train_ds: Dataset = MaskedSkullDataset(train_files, mask_cfg, cfg.seed, augment,
                                               with_mask=loss_cfg.needs_mask, coarse_epochs=cfg.coarse_epochs,
                                               crop=cfg.crop)
        val_ds: Dataset = MaskedSkullDataset(val_files, mask_cfg, cfg.seed + 1, fixed=True)
    elif task == "refine":
        from skullrecon.refine import RefineDataset, refine_loss

        train_ds = RefineDataset(train_files, refine, mask_cfg, cfg.seed, first_stage=first_stage)
        val_ds = RefineDataset(val_files, refine, mask_cfg, cfg.seed + 1, fixed=True, first_stage=first_stage)
    else:
        train_ds, val_ds = PairDataset(train_files, cfg.crop, cfg.seed), PairDataset(val_files)

    net, opt, sched, loss_fn, use_bf16 = build_training(spec, cfg, dev, loss_cfg)
    if task == "refine":
        loss_fn = refine_loss
    channels_last = uses_channels_last(cfg, dev, use_bf16)  # the network already is (build_training)
    ema = make_ema(net, cfg.ema)

    checkpoint_dir, log_csv = Path(checkpoint_dir), Path(log_csv)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint({**spec, "loss": loss_cfg.as_spec()} if loss else spec, cfg, files)
    start_epoch, val_dsc = _resume(checkpoint_dir / "last.pt", fingerprint, cfg.epochs, net, opt, sched, log, ema)
    _trim_log(log_csv, start_epoch)

    method = spec.get("method", "train")
    if cfg.bf16 and cfg.cpu_bf16 and dev.type == "cpu" and not use_bf16 and cpu_bf16_faults():
        log(f"{method}: cpu_bf16 off on this CPU: its bf16 convolutions disagree with float32 "
            f"({'; '.join(cpu_bf16_faults())}; docs/upstream/onednn-bf16-conv3d-wgrad.md); training in float32")
    bar = tqdm(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs,
               desc=method, disable=not progress, mininterval=5)
    loader, sampler = make_loader(train_ds, cfg, dev)
    guard = StepGuard(method, checkpoint_dir / "last.pt", log)
    for epoch in bar:
        t0, cpu0 = time.time(), time.process_time()
        sampler.epoch = train_ds.epoch = epoch
        net.train()
        losses = []
        guard.start_epoch()
        for step, (x, y) in enumerate(loader):
            try:
                losses.append(train_step(net, opt, loss_fn, x, y, dev, use_bf16, channels_last))
            except NonFiniteStep as err:
                guard.skipped(epoch, step, str(err))
                continue
            guard.applied()
            if ema is not None:
                ema.update_parameters(net)
        guard.end_epoch(epoch)
        losses = [float(v) for v in losses]
        lr = opt.param_groups[0]["lr"]
        sched.step()
        val_dsc, val_restored = _validate(net if ema is None else ema.module, val_ds, dev, use_bf16, task,
                                          channels_last)
        if len(val_ds) and not (math.isfinite(val_dsc) and math.isfinite(val_restored)):
            guard.stop(epoch, "its validation output was not finite")
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "val_dsc": val_dsc, "val_restored_dsc": val_restored, "lr": lr, "seconds": round(time.time() - t0, 3),
               "cpu_seconds": round(time.process_time() - cpu0, 3),  # this process's CPU (its threads, not workers)
               "skipped_steps": guard.in_epoch}
        _append_log(log_csv, row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_dsc=f"{val_dsc:.4f}", restored=f"{val_restored:.4f}")
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            _checkpoint(checkpoint_dir / "last.pt", fingerprint, epoch + 1, net, opt, sched, val_dsc, ema)
    if ema is not None:
        net = ema.module  # the averaged weights are the ones validated and kept
    net = net.to(memory_format=torch.contiguous_format)  # the model file in the default layout
    spec = {**spec, "task": task, "train": asdict(cfg), "val_dsc": val_dsc,
            "masking": asdict(mask_cfg) if mask_cfg is not None else None,
            "loss": loss_cfg.as_spec() if task == "reconstruct" else None,
            "train_cases": [Path(f).stem for f in train_files]}
    save_model(out_path, net, spec)
    log(f"wrote {out_path} (epochs {cfg.epochs}, resumed at {start_epoch}, validation DSC {val_dsc:.4f})")
    return {"epochs": cfg.epochs, "resumed_from": start_epoch, "val_dsc": val_dsc}


@torch.no_grad()
def _validate(net, ds: Dataset, dev: torch.device, bf16: bool, task: str,
              channels_last: bool = False) -> tuple[float, float]:
    """Mean validation DSC of the output and of the restored bone (see :func:`restored_dice`)."""
    if len(ds) == 0:
        return float("nan"), float("nan")
    net.eval()
    scores, restored = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        x, y = _layout(x[None].to(dev).float(), channels_last), y[None, :1].to(dev).float()  # uint8 grids
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x).float()
        if not bool(torch.isfinite(logits).all()):  # a thresholded NaN would score as a plain miss
            return float("nan"), float("nan")
        scores.append(dice_score(logits, y).item())
        # the second stage's input has a second channel (the first stage's output): the bone given is the first
        restored.append(restored_dice(logits, x[:, :1], y).item() if task != "implant" else scores[-1])
    return float(np.mean(scores)), float(np.mean(restored))


def _checkpoint(path: Path, fingerprint: str, epoch: int, net, opt, sched, val_dsc: float, ema=None) -> None:
    from skullrecon.io import atomic_path

    state = {"fingerprint": fingerprint, "epoch": epoch, "val_dsc": float(val_dsc), "model": net.state_dict(),
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "torch_rng": torch.get_rng_state()}
    if ema is not None:
        state["ema"] = ema.state_dict()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(path: Path, fingerprint: str, epochs: int, net, opt, sched, log, ema=None) -> tuple[int, float]:
    """Load a compatible checkpoint; returns (epochs done, validation DSC of the last one)."""
    if not path.exists():
        return 0, float("nan")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - e.g. a file damaged outside this program
        log(f"{path}: unreadable checkpoint ({type(err).__name__}: {err}); starting from epoch 0")
        return 0, float("nan")
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        log(f"{path}: checkpoint was made with other settings or data; starting from epoch 0")
        return 0, float("nan")
    if int(state["epoch"]) > epochs:  # it cannot be un-trained to fewer epochs
        log(f"{path}: checkpoint is at epoch {state['epoch']}, beyond the {epochs} epochs asked for; "
            "starting from epoch 0")
        return 0, float("nan")
    net.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["torch_rng"])
    log(f"resumed from checkpoint {path} at epoch {state['epoch']}")
    return int(state["epoch"]), float(state.get("val_dsc", float("nan")))


def _trim_log(log_csv: Path, epochs_done: int) -> None:
    """Keep only the log rows of epochs a resumed run will not repeat."""
    if not log_csv.exists():
        return
    with open(log_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= epochs_done]
    log_csv.unlink()
    for r in rows:
        _append_log(log_csv, r)


def _append_log(log_csv: Path, row: dict) -> None:
    log_csv.parent.mkdir(parents=True, exist_ok=True)
    header = None
    if log_csv.exists():
        with open(log_csv, newline="") as fh:
            header = next(csv.reader(fh), [])
    if header is not None and header != list(row):  # a log begun by an earlier version: rewritten with the new columns
        with open(log_csv, newline="") as fh:
            old = list(csv.DictReader(fh))
        log_csv.unlink()
        for r in old:
            _append_log(log_csv, {k: r.get(k, "") for k in row})
        header = list(row) if log_csv.exists() else None
    with open(log_csv, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if header is None:
            writer.writeheader()
        writer.writerow(row)


def train_run(
    task: str,
    input_dirs: Sequence[str | Path],
    model_path: str | Path,
    history_path: str | Path,
    checkpoint_dir: str | Path,
    method: str,
    arch: str,
    network: dict[str, Any],
    train: dict[str, Any],
    grid: int,
    margin: float,
    masking: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    device: str = "auto",
    loss: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One pipeline training job: gather the cases, train, and copy the epoch log beside the model.

    The MAE (``task='reconstruct'``) trains on ``healthy/*.npz`` of every input directory,
    the baselines on ``cases/*.npz`` (defective skull -> implant). The network file holds what
    training determined; post-processing settings are added later (:func:`~skullrecon.models.bundle_model`),
    so they neither enter the checkpoint fingerprint nor make a settings change retrain.
    """
    import shutil

    pick_device(device)  # a GPU job on a node without CUDA stops here, before reading any data
    sub = "healthy" if task == "reconstruct" else "cases"
    files = sorted(f for d in input_dirs for f in (Path(d) / sub).glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"no training cases in {[str(Path(d) / sub) for d in input_dirs]}")
    spec = {"method": method, "arch": arch, "network": network, "grid": grid, "margin": margin}
    mask_cfg = MaskConfig.from_dict(masking) if masking is not None else None
    if mask_cfg is not None:
        mask_cfg.deform = method.endswith("_d")
    aug = None
    if augment and augment.get("activate"):
        aug = AugmentConfig.from_dict({k: v for k, v in augment.items() if k != "activate"})
    print(f"{method}: {len(files)} training cases from {[str(d) for d in input_dirs]}")
    checkpoint_dir = Path(checkpoint_dir)
    summary = train_model(task, files, model_path, spec, TrainConfig.from_dict(train), checkpoint_dir,
                          checkpoint_dir / "history.csv", mask_cfg, aug, device,
                          loss=LossConfig.from_dict(loss) if task == "reconstruct" else None)
    shutil.copyfile(checkpoint_dir / "history.csv", history_path)
    return summary
