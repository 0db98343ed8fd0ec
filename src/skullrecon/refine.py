"""The second stage (issue 37): a network at a finer grid, around what the first stage fills.

The first stage predicts on its coarse grid (64^3 on 2 CPU cores, about 3.4 mm voxels). The second stage works on
a finer grid of the same box (``grid``: the box does not depend on the grid, :func:`~skullrecon.preprocess.plan_crop`),
and only on a region of interest (ROI) around the first stage's fill. Its input is two channels on the ROI: the
defective skull at the fine grid and the first stage's complete-skull probability upsampled to it. It outputs the
complete skull and keeps the input's bone (:class:`~skullrecon.models.KeepInput`). Back on the original grid, the
refined output replaces the first stage's inside the ROI; the implant is then made by each method's own
post-processing, as before.

One second stage serves every method, and it learns from healthy skulls only: no defect. The first-stage output it
learns to refine is either simulated from the healthy skull (:func:`simulate_first_stage`: the skull as the coarse
grid sees it, displaced, blurred and made thicker or thinner where the MAE's own masks removed bone) or a trained
MAE's own output on the masked healthy skull (``first_stage``: a network that never saw a defect either). So adding it
retrains no first stage, the MAE's side still learns from healthy skulls only, and every method gets the same stage
(a baseline's implant becomes a complete-skull estimate by adding its input's bone).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from skullrecon.masking import MaskConfig, make_mask
from skullrecon.preprocess import Geometry, bounding_box, from_grid, load_case, to_grid
from skullrecon.settings import from_mapping
from skullrecon.train import crop_window

__all__ = ["RefineConfig", "SimulationConfig", "simulate_first_stage", "fill_box", "upsample_window",
           "RefineDataset", "train_refiner", "refine_prediction", "region_of_interest", "refine_cases",
           "refine_run"]


@dataclass
class SimulationConfig:
    """How a first stage's output is simulated from a healthy skull where a mask removed bone (coarse grid).

    Args:
        shift_mm: largest displacement of the simulated bone (a smooth random field, 4^3 control points).
        blur_voxels: (min, max) Gaussian sigma in coarse voxels.
        contrast: (min, max) factor on the probability's distance from 0.5 (below 1: less sure; above: surer).
        bias: largest shift of the probability, up or down (thicker or thinner bone at threshold 0.5).
        ramp_mm: the displacement grows from 0 at the intact bone to its whole over this distance (0: the whole
            everywhere). A first stage sees the defect's rim, so its bone meets the rim and strays from the true
            shape only away from it; without the ramp the simulated bone is out of place at the rim too.
    """

    shift_mm: float = 4.0
    blur_voxels: tuple[float, float] = (0.3, 1.2)
    contrast: tuple[float, float] = (0.6, 1.6)
    bias: float = 0.15
    ramp_mm: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SimulationConfig:
        return from_mapping(cls, d or {}, "refine simulation", tuples=("blur_voxels", "contrast"))


@dataclass
class RefineConfig:
    """Args:
        grid: the fine grid over the first stage's box (a multiple of the first stage's grid).
        coarse_grid: the first stage's grid the stage is trained for.
        roi_margin_mm: room around the first stage's fill, in mm.
        crop: training window edge in fine voxels (the ROI is taken whole at inference).
        samples_per_skull: windows drawn from each healthy skull per epoch.
    """

    grid: int = 256
    coarse_grid: int = 64
    roi_margin_mm: float = 15.0
    crop: int = 64
    samples_per_skull: int = 4
    simulation: SimulationConfig = field(default_factory=SimulationConfig)

    def __post_init__(self) -> None:
        if isinstance(self.simulation, dict):
            self.simulation = SimulationConfig.from_dict(self.simulation)
        if self.grid % self.coarse_grid:
            raise ValueError(f"refine grid {self.grid} must be a multiple of the first stage's {self.coarse_grid}")
        if self.crop % (self.factor * 8):
            raise ValueError(f"refine crop {self.crop} must be a multiple of {self.factor * 8} (the grid factor x 8)")

    @property
    def factor(self) -> int:
        return self.grid // self.coarse_grid

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RefineConfig:
        return from_mapping(cls, d, "refine")


def _blur(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (1, 1, D, H, W) tensor, zero padded."""
    if sigma <= 0:
        return t
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    for ax in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + ax] = len(k)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - ax)] = pad[2 * (2 - ax) + 1] = r
        t = F.conv3d(F.pad(t, pad), k.reshape(shape))
    return t


def simulate_first_stage(skull: np.ndarray, removed: np.ndarray, spacing_mm: float, cfg: SimulationConfig,
                         rng: np.random.Generator) -> np.ndarray:
    """A first stage's complete-skull probability on its coarse grid, made from the healthy skull.

    ``skull``: the healthy skull's coarse fraction (float, [0, 1]); ``removed``: the coarse mask of removed bone.
    Where bone was removed the skull is displaced by a smooth random field of up to ``shift_mm``, blurred, and its
    probability stretched and shifted (a network unsure of, or wrong about, the shape it invents); elsewhere the
    first stage reproduces the bone it was given. The two are blended over a few voxels, as a network's output is.
    """
    t = torch.from_numpy(np.ascontiguousarray(skull, dtype=np.float32))[None, None]
    shape = t.shape[2:]
    shift = cfg.shift_mm / spacing_mm  # coarse voxels
    control = torch.from_numpy(rng.uniform(-1.0, 1.0, (1, 3, 4, 4, 4))).float()
    disp = F.interpolate(control, size=shape, mode="trilinear", align_corners=True)[0]  # (3, D, H, W), voxels/shift
    axes = [torch.linspace(-1 + 1 / n, 1 - 1 / n, n) for n in shape]  # voxel centres, align_corners=False
    base = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    if cfg.ramp_mm > 0:  # no displacement at the intact bone, the whole from ramp_mm inside the defect on
        import edt

        intact = (skull >= 0.5) & ~removed
        if intact.any():
            away = edt.edt(~intact, black_border=False) * spacing_mm  # mm to the nearest intact bone voxel
            disp = disp * torch.from_numpy(np.clip(away / cfg.ramp_mm, 0, 1).astype(np.float32))[None]
    coords = base + disp * (shift * 2 / torch.tensor(shape, dtype=torch.float32)).reshape(3, 1, 1, 1)
    # grid_sample wants (x, y, z) = (W, H, D) last
    warped = F.grid_sample(t, coords.flip(0).permute(1, 2, 3, 0)[None], mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    warped = _blur(warped, float(rng.uniform(*cfg.blur_voxels)))
    contrast, bias = float(rng.uniform(*cfg.contrast)), float(rng.uniform(-cfg.bias, cfg.bias))
    invented = ((warped - 0.5) * contrast + 0.5 + bias).clamp(0, 1)
    weight = _blur(torch.from_numpy(np.ascontiguousarray(removed, dtype=np.float32))[None, None], 1.0)
    weight = (weight * 2).clamp(0, 1)  # 1 over the removed region, fading out over about two voxels
    return (t * (1 - weight) + invented * weight)[0, 0].numpy()


def upsample_window(coarse: np.ndarray, window: Sequence[slice], factor: int) -> np.ndarray:
    """Trilinear upsampling (``align_corners=False``, the grids' shared voxel convention) of ``coarse`` by
    ``factor``, only for the fine voxels of the coarse ``window``: equal to upsampling the whole grid and cutting."""
    pad = [(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(window, coarse.shape)]
    part = torch.from_numpy(np.ascontiguousarray(coarse[tuple(slice(a, b) for a, b in pad)], dtype=np.float32))
    up = F.interpolate(part[None, None], scale_factor=factor, mode="trilinear", align_corners=False)[0, 0]
    cut = tuple(slice((s.start - a) * factor, (s.stop - a) * factor) for s, (a, _) in zip(window, pad))
    return up[cut].numpy()


def _coarse_fraction(fine: np.ndarray, factor: int) -> np.ndarray:
    """The fine grid's skull as the coarse grid sees it (the fraction of each coarse voxel that is bone)."""
    t = torch.from_numpy(np.ascontiguousarray(fine, dtype=np.float32))[None, None]
    return F.avg_pool3d(t, factor)[0, 0].numpy()


def fill_box(complete: np.ndarray, defective: np.ndarray, margin: int, multiple: int) -> tuple[slice, ...] | None:
    """The coarse window around the largest component of what ``complete`` (a probability) adds to ``defective``
    (binary), ``margin`` voxels wider on each side, its edges a multiple of ``multiple`` (kept inside the grid);
    None where nothing is added."""
    from skullrecon.postprocess import largest_component

    fill = largest_component((complete >= 0.5) & (defective < 0.5))
    if not fill.any():
        return None
    lo, hi = bounding_box(fill)
    window = []
    for a, b, n in zip(lo - margin, hi + margin, fill.shape):
        size = min(n - n % multiple, -(-(b - a) // multiple) * multiple)
        start = int(min(max(0, (a + b - size) // 2), n - size))
        window.append(slice(start, start + size))
    return tuple(window)


def region_of_interest(complete: np.ndarray, grid_input: np.ndarray, geom: Geometry,
                       cfg: RefineConfig) -> tuple[slice, ...] | None:
    """The first stage's window the second stage refines: its fill with ``roi_margin_mm`` around it, edges that
    make a fine window a multiple of 16 voxels (the UNet's strides); None where the first stage fills nothing."""
    margin = int(math.ceil(cfg.roi_margin_mm / float(np.max(geom.grid_spacing))))
    return fill_box(complete, grid_input, margin, 16 // math.gcd(16, cfg.factor))


class RefineDataset(Dataset):
    """Windows of healthy skulls at the fine grid: ((defective, simulated first stage), complete skull).

    The defect is one of the MAE's own masks, drawn on the coarse grid as the MAE draws it and cut at the fine
    grid; the window is centred on removed bone. Draws depend only on (seed, epoch, index), like the MAE's.
    Skulls are kept in memory after their first read (a few MB each, bit-packed on disk).
    """

    def __init__(self, files: Sequence[Path], cfg: RefineConfig, mask_cfg: MaskConfig, seed: int, fixed: bool = False,
                 first_stage: tuple[torch.nn.Module, dict[str, Any]] | None = None):
        self.files, self.cfg, self.mask_cfg, self.seed, self.fixed = list(files), cfg, mask_cfg, seed, fixed
        self.epoch, self._cache, self.first_stage = 0, {}, first_stage

    def __len__(self) -> int:
        return len(self.files) * self.cfg.samples_per_skull

    def _skull(self, i: int) -> tuple[np.ndarray, np.ndarray, float]:
        if i not in self._cache:
            arrays, geom = load_case(self.files[i])
            fine = arrays["complete"].astype(bool)
            if fine.shape != (self.cfg.grid,) * 3:
                raise ValueError(f"{self.files[i]}: a {fine.shape[0]}^3 skull, the refine grid is {self.cfg.grid}")
            spacing = float(np.max(geom.grid_spacing)) * self.cfg.factor
            self._cache[i] = (np.packbits(fine), _coarse_fraction(fine, self.cfg.factor), spacing)
        packed, coarse, spacing = self._cache[i]
        return np.unpackbits(packed, count=self.cfg.grid ** 3).reshape((self.cfg.grid,) * 3), coarse, spacing

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, j = key if isinstance(key, tuple) else (self.epoch, key)
        i = j % len(self.files)
        fine, coarse, spacing = self._skull(i)
        rng = np.random.default_rng([self.seed, 0 if self.fixed else epoch + 1, j])
        f = self.cfg.factor
        patches = make_mask(coarse >= 0.5, spacing, self.mask_cfg, rng)
        removed = patches & (coarse >= 0.5)
        window = crop_window(removed, self.cfg.crop // f, rng)  # the trainer's: centred on removed bone
        if self.first_stage is None:
            first = simulate_first_stage(coarse, removed, spacing, self.cfg.simulation, rng)
        else:
            first = self._first_stage_output((coarse >= 0.5) & ~removed)
        fine_window = tuple(slice(s.start * f, s.stop * f) for s in window)
        # the whole patches come out at the fine grid, as a real defect takes all the bone it spans: cutting only the
        # coarse voxels that are mostly bone left the skull's surfaces (about 5 % of the bone) inside the defect, a
        # trace of the true shape that no real defect has (what the stage learned before 2026-12-06)
        cut = upsample_window(patches.astype(np.float32), window, f) >= 0.5
        skull = fine[fine_window].astype(bool)
        x = np.stack([skull & ~cut, upsample_window(first, window, f)]).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(skull.astype(np.uint8))[None]


    @torch.no_grad()
    def _first_stage_output(self, given: np.ndarray) -> np.ndarray:
        """A first-stage network's complete-skull probability for the skull its grid is given (the MAE's own
        training input: the mask applied on the coarse grid)."""
        net, spec = self.first_stage
        x = torch.from_numpy(given.astype(np.float32))[None, None]
        prob = torch.sigmoid(net(x).float())[0, 0].numpy()
        return prob if spec["task"] == "reconstruct" else np.maximum(prob, given)


@functools.cache
def _soft_dice() -> torch.nn.Module:
    from monai.losses import DiceLoss

    return DiceLoss(sigmoid=False)


def refine_loss(logits: torch.Tensor, target: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """Soft Dice of the bone added where the defective skull has none (the MAE's ``added`` loss)."""
    free = 1 - given[:, :1]
    return _soft_dice()(torch.sigmoid(logits) * free, target * free)


def network_spec(cfg: RefineConfig, network: dict[str, Any], margin: float) -> dict[str, Any]:
    """The model spec of a second-stage network (a two-channel UNet that keeps its input's bone)."""
    return {"arch": "unet", "network": {**network, "in_channels": 2}, "grid": cfg.grid, "margin": margin,
            "task": "refine", "keep_input": True, "method": "refiner", "refine": asdict(cfg)}


def train_refiner(files: Sequence[Path], out_path: str | Path, cfg: RefineConfig, mask_cfg: MaskConfig,
                  network: dict[str, Any], train_cfg, margin: float, checkpoint_dir: str | Path,
                  log_csv: str | Path, device: str = "auto", log: Callable[[str], None] = print,
                  first_stage: str | Path | None = None) -> dict[str, Any]:
    """Train the second stage on healthy skulls at the fine grid (``files``: ``healthy/*.npz`` of that grid).

    The MAE's trainer does the work (:func:`skullrecon.train.train_model`, task ``refine``): its schedule, EMA,
    bf16 check, non-finite-step guard, checkpoints and per-epoch log.
    """
    from skullrecon.train import train_model

    # the masks in the spec from the start: they enter the checkpoint's fingerprint, so a masking change never
    # resumes a checkpoint trained with other masks; "cut": how the training defects are cut at the fine grid (the
    # whole patches since 2026-12-06; a checkpoint of the earlier cut, which left bone in the defect, never resumes)
    spec = {**network_spec(cfg, network, margin), "masking": asdict(mask_cfg), "cut": "patches"}
    first = None
    if first_stage is not None:  # learn from this network's outputs instead of simulated ones
        from skullrecon.models import load_model
        from skullrecon.release import sha256_of

        first = load_model(first_stage, "cpu")
        if first[1]["grid"] != cfg.coarse_grid:
            raise ValueError(f"{first_stage}: a {first[1]['grid']}^3 first stage, the refiner's is {cfg.coarse_grid}^3")
        spec["first_stage"] = {"method": first[1].get("method"), "sha256": sha256_of(Path(first_stage))}
    return train_model("refine", files, out_path, spec, train_cfg, checkpoint_dir, log_csv, mask_cfg=mask_cfg,
                       device=device, log=log, refine=cfg, first_stage=first)


def _fine_geometry(coarse: Geometry, grid: int) -> Geometry:
    return Geometry(coarse.shape, coarse.spacing, coarse.box_start, coarse.box_size, grid)


def _original_region(geom: Geometry, window: Sequence[slice]) -> tuple[slice, ...]:
    """The original voxels whose fine-grid values come from inside ``window`` only (one fine voxel kept off each
    edge: interpolation there would read the zeros outside the window)."""
    out = []
    for s, start, size, n in zip(window, geom.box_start, geom.box_size, geom.shape):
        a = start + math.ceil((s.start + 1) * size / geom.grid)
        b = start + math.floor((s.stop - 1) * size / geom.grid)
        out.append(slice(max(a, 0), max(min(b, n), 0)))
    return tuple(out)


@torch.no_grad()
def refine_prediction(defective: np.ndarray, first: np.ndarray | torch.Tensor, grid_input: np.ndarray,
                      geom: Geometry, task: str, net: torch.nn.Module, spec: dict[str, Any], device: torch.device,
                      threshold: float = 0.5, order: str = "C", timings: dict[str, float] | None = None
                      ) -> np.ndarray:
    """The first stage's output on the original grid, refined by the second stage around what it fills.

    ``first``: the first stage's probabilities on its grid (``geom``); ``grid_input``: the binary defective skull
    it was given. Returns uint8 on the original grid: the first stage's upsampled output, with the second stage's
    complete skull inside the ROI (unchanged where the first stage fills nothing).
    """
    cfg = RefineConfig.from_dict(spec["refine"])
    prob = first.float().cpu().numpy() if isinstance(first, torch.Tensor) else np.asarray(first, np.float32)
    if geom.grid != cfg.coarse_grid:
        raise ValueError(f"the second stage refines a {cfg.coarse_grid}^3 first stage, this one is {geom.grid}^3")
    t = time.perf_counter()
    out = from_grid(first, geom, threshold, order=order)
    complete = prob if task == "reconstruct" else np.maximum(prob, grid_input)  # a baseline's implant + its input
    window = region_of_interest(complete, grid_input, geom, cfg)
    if window is None:
        return out
    f = cfg.factor
    fine_geom = _fine_geometry(geom, cfg.grid)
    fine_window = tuple(slice(s.start * f, s.stop * f) for s in window)
    fine_defective = to_grid(defective, fine_geom)[fine_window] >= 0.5  # only the skull's box is summed
    x = np.stack([fine_defective, upsample_window(complete, window, f)]).astype(np.float32)
    if timings is not None:
        timings["refine_input"] = time.perf_counter() - t
    t = time.perf_counter()
    logits = net(torch.from_numpy(x)[None].to(device))
    refined = torch.zeros((cfg.grid,) * 3, dtype=torch.float32, device=device)
    refined[fine_window] = torch.sigmoid(logits.float())[0, 0]
    if timings is not None:
        timings["refine_network"] = time.perf_counter() - t
    region = _original_region(fine_geom, fine_window)
    inside = from_grid(refined, fine_geom, threshold, region=region, order=order)
    out[region] = inside[region]
    return out


def refine_run(input_dirs: Sequence[str | Path], model_path: str | Path, history_path: str | Path,
               checkpoint_dir: str | Path, refine: dict[str, Any], masking: dict[str, Any], coarse_grid: int,
               margin: float, device: str = "auto", log: Callable[[str], None] = print,
               first_stage: str | Path | None = None) -> dict[str, Any]:
    """The ``train_refiner`` job: the second stage trained on ``healthy/*.npz`` (fine grid) of every input folder.

    ``refine``: the config's ``refine`` section (``network``, ``train`` and the :class:`RefineConfig` settings);
    the masks are the MAE (D)'s (``masking`` with ``deform``), drawn on the first stage's ``coarse_grid``.
    ``first_stage``: a first stage's model file whose outputs it learns from instead of simulated ones.
    """
    import shutil

    from skullrecon.models import pick_device
    from skullrecon.train import TrainConfig

    pick_device(device)  # a GPU job on a node without CUDA stops here, before reading any data
    files = sorted(f for d in input_dirs for f in (Path(d) / "healthy").glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"no healthy skulls in {[str(Path(d) / 'healthy') for d in input_dirs]}")
    settings = {k: v for k, v in refine.items() if k not in ("network", "train", "methods", "first_stage")}
    cfg = RefineConfig.from_dict({**settings, "coarse_grid": coarse_grid})
    mask_cfg = MaskConfig.from_dict({**masking, "deform": True})
    history = Path(checkpoint_dir) / "history.csv"
    summary = train_refiner(files, model_path, cfg, mask_cfg, refine["network"], TrainConfig.from_dict(refine["train"]),
                            margin, checkpoint_dir, history, device=device, log=log, first_stage=first_stage)
    shutil.copyfile(history, history_path)
    return summary


def refine_cases(pred_dir: str | Path, cases_dir: str | Path, refiner_path: str | Path, out_dir: str | Path,
                 task: str, threshold: float = 0.5, device: str = "auto", log: Callable[[str], None] = print) -> int:
    """The ``refine`` job: each stored first-stage prediction refined and put on its case's original grid, written
    like the defective skull (what ``upsample`` writes for the single stage)."""
    import pandas as pd

    from skullrecon.infer import read_prediction
    from skullrecon.io import memory_order, read_volume, write_volume
    from skullrecon.models import load_model, pick_device

    dev = pick_device(device)
    net, spec = load_model(refiner_path, dev)
    table = pd.read_csv(Path(cases_dir) / "cases.tsv", sep="\t", dtype=str, keep_default_na=False)
    for row in table.itertuples():
        defective = read_volume(row.defective)
        prob, geom = read_prediction(pred_dir, row.name, defective)
        grid_input = load_case(Path(cases_dir) / "cases" / f"{row.name}.npz")[0]["defective"]
        order = memory_order(defective.array)
        refined = refine_prediction(defective.array, prob, grid_input, geom, task, net, spec, dev, threshold, order)
        write_volume(Path(out_dir) / f"{row.name}.nrrd", refined, like=defective)
        log(f"{row.name}: {geom.grid}^3 refined at {spec['grid']}^3 -> {geom.shape}")
    return len(table)
