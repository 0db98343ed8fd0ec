"""Random patch masks for the self-supervised (deformable) masked autoencoder.

Each training step removes a random number of patches of random size from a healthy skull and
the network reconstructs the whole skull. Two kinds of mask are supported:

* **D (deformable)** -- each cube patch is warped by a random smooth displacement field, so the
  removed region has a smooth, irregular boundary resembling a real cranial defect (SkullBreak).
* **ND (non-deformable)** -- the sharp axis-aligned cube (the ablation in the paper).

All sizes are in millimetres and converted with the grid spacing, so a configuration means the
same physical defect at a 64^3 grid (~4 mm voxels) and at a 256^3 grid (~1 mm voxels).

Only what the patches need is deformed: each patch is warped inside a local crop around its
centre (patch extent plus a margin for the displacement), never the whole volume. The
displacement comes from a coarse random control grid (``elastic_control_points``^3 vectors, each
component uniform in +-``elastic_magnitude`` x edge length) smoothed onto the crop with cubic
B-spline weights (``elastic_interpolation="cubic"``, the default: a C2 field, like TorchIO's
B-spline elastic deformation that the paper used) or trilinearly (``"linear"``: creased patch
boundaries where the field has kinks); the warped patch is the cube pulled back through it,
{x : x + d(x) in cube}. The B-spline weights are normalised per sample, so the field is a convex
combination of control vectors and never exceeds their bound. Two shortcuts keep one 256^3 case
well under 0.2 s on one CPU core (see ``bench/masking.py``; warping the whole volume with TorchIO
``RandomElasticDeformation`` takes seconds), both tested against the direct torch route: the
upsampling is done as separable matrix products (for ``"linear"`` equal to
``F.interpolate(mode="trilinear", align_corners=True)``), and the cube indicator is evaluated
analytically at x + d(x) instead of through ``F.grid_sample`` (same region up to boundary
voxels; ``_warped_patch(method="grid_sample")`` keeps the reference). The connected piece
containing the centre is kept, so one patch is one defect.

Where the patches go: centres are skull voxels drawn uniformly, optionally only from the upper
part of the skull (``centre_min_height``: a fraction of the skull's extent along the last array
axis, which points to the vertex in SkullBreak, SkullFix and the synthetic datasets), because
cranial defects lie in the vault, not in the skull base or the face.

Removed-fraction cap: patches are accepted in the order they were drawn; a patch that would push
the fraction of removed skull voxels above ``max_removed_fraction`` is dropped. If even the first
patch alone exceeds the cap, it is shrunk (edge length x0.75 per try, same centre and displacement
pattern) until it fits, so at least one patch is always kept and the cap always holds (unless the
patch has shrunk to a single voxel, which is then kept).

Reproducibility: the result depends only on the skull, spacing, config and the state of ``rng``.
Patch counts, sizes and centres are drawn before any displacement field, so a D and an ND config
with the same seed (and the same count/size settings) place the same patches -- which is what
:func:`masking_examples` shows side by side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from skullrecon.morphology import label_components

__all__ = [
    "MaskConfig",
    "Patch",
    "make_mask",
    "make_mask_with_patches",
    "apply_mask",
    "masking_examples",
]


@dataclass
class MaskConfig:
    """Settings of the random patch masks.

    Args:
        deform: True for deformable (D) patches, False for sharp cubes (ND).
        n_patches: inclusive (min, max) number of patches drawn per case.
        patch_size_mm: (min, max) cube edge length in mm, drawn uniformly per patch.
        elastic_magnitude: maximum displacement per axis as a fraction of the patch edge length
            (must be < 0.5 so the patch centre always stays inside its warped patch).
        elastic_control_points: control points per axis of the coarse random displacement grid.
        max_removed_fraction: cap on the fraction of skull voxels removed (see module doc).
        elastic_interpolation: "cubic" (B-spline, smooth) or "linear" (trilinear) upsampling of
            the control grid.
        centre_min_height: patch centres only on skull voxels at or above this fraction of the
            skull's extent along the last axis (0: anywhere on the skull).
    """

    deform: bool = True
    n_patches: tuple[int, int] = (1, 4)
    patch_size_mm: tuple[float, float] = (30.0, 80.0)
    elastic_magnitude: float = 0.25
    elastic_control_points: int = 4
    max_removed_fraction: float = 0.35
    elastic_interpolation: str = "cubic"
    centre_min_height: float = 0.0

    def __post_init__(self) -> None:
        self.n_patches = (int(self.n_patches[0]), int(self.n_patches[1]))
        self.patch_size_mm = (float(self.patch_size_mm[0]), float(self.patch_size_mm[1]))
        if not 1 <= self.n_patches[0] <= self.n_patches[1]:
            raise ValueError(f"n_patches must satisfy 1 <= min <= max, got {self.n_patches}")
        if not 0 < self.patch_size_mm[0] <= self.patch_size_mm[1]:
            raise ValueError(
                f"patch_size_mm must satisfy 0 < min <= max, got {self.patch_size_mm}"
            )
        if not 0.0 <= self.elastic_magnitude < 0.5:
            raise ValueError(
                f"elastic_magnitude must be in [0, 0.5), got {self.elastic_magnitude}"
            )
        if self.elastic_control_points < 2:
            raise ValueError(
                f"elastic_control_points must be >= 2, got {self.elastic_control_points}"
            )
        if not 0.0 < self.max_removed_fraction <= 1.0:
            raise ValueError(
                f"max_removed_fraction must be in (0, 1], got {self.max_removed_fraction}"
            )
        if self.elastic_interpolation not in _WEIGHTS:
            raise ValueError(
                f"elastic_interpolation must be one of {sorted(_WEIGHTS)}, "
                f"got {self.elastic_interpolation!r}"
            )
        if not 0.0 <= self.centre_min_height < 1.0:
            raise ValueError(f"centre_min_height must be in [0, 1), got {self.centre_min_height}")

    @classmethod
    def from_dict(cls, d: dict) -> MaskConfig:
        """Build a config from a mapping (e.g. a YAML section); unknown keys raise ValueError."""
        from skullrecon.settings import from_mapping

        return from_mapping(cls, d, "masking", tuples=("n_patches", "patch_size_mm"))


@dataclass
class Patch:
    """One accepted patch (voxel units of the grid it was made on).

    Args:
        center: (3,) integer voxel index of the skull voxel the patch is centred on.
        size_mm: cube edge length in mm actually used (after any shrinking for the cap).
        removed: number of skull voxels this patch removed that earlier patches had not.
    """

    center: tuple[int, int, int]
    size_mm: float
    removed: int


def _spacing3(spacing_mm: float | Sequence[float]) -> np.ndarray:
    sp = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
    if np.any(sp <= 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    return sp


def _sample_centres(
    skull_flat: np.ndarray, n: int, rng: np.random.Generator, shape: tuple[int, ...],
    min_height: float = 0.0,
) -> np.ndarray:
    """Draw ``n`` flat indices uniformly among nonzero voxels (with replacement).

    With ``min_height`` > 0 only voxels whose last-axis index is at least that fraction of the
    skull's extent along the last axis are eligible. Rejection sampling over random voxel indices
    avoids scanning the whole volume (a skull is a few percent of a 256^3 grid); falls back to an
    explicit index list if the eligible voxels are very sparse.
    """
    size = skull_flat.size
    z0 = 0
    if min_height > 0:
        zs = np.flatnonzero(skull_flat.reshape(shape).any(axis=(0, 1)))
        if zs.size:
            z0 = int(np.ceil(zs[0] + min_height * (zs[-1] - zs[0])))
    nz_last = shape[-1]
    out: list[int] = []
    for _ in range(8):
        idx = rng.integers(0, size, size=max(256, 64 * n))
        hits = idx[(skull_flat[idx] != 0) & (idx % nz_last >= z0)]
        out.extend(hits[: n - len(out)].tolist())
        if len(out) >= n:
            return np.asarray(out, dtype=np.int64)
    nz = np.flatnonzero(skull_flat)
    nz = nz[nz % nz_last >= z0]
    if nz.size == 0:
        raise ValueError("skull is empty: no voxel to centre a patch on")
    rest = rng.choice(nz, size=n - len(out), replace=True)
    return np.concatenate([np.asarray(out, dtype=np.int64), rest.astype(np.int64)])


def _cube_bounds(
    center: np.ndarray, half_vox: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) voxel bounds of voxels whose centre lies within ``half_vox`` of ``center``."""
    lo = np.maximum(np.ceil(center - half_vox - 1e-9).astype(int), 0)
    hi = np.minimum(np.floor(center + half_vox + 1e-9).astype(int) + 1, np.asarray(shape))
    return lo, hi


def _control_positions(n: int, k: int) -> torch.Tensor:
    """(n, k) signed distances, in control spacings, from n samples to k control points.

    The control points span the crop from its first to its last sample (the positions of
    ``F.interpolate(..., align_corners=True)``): sample i sits at control coordinate
    i (k - 1) / (n - 1).
    """
    pos = torch.arange(n, dtype=torch.float32) * ((k - 1) / max(n - 1, 1))
    return pos[:, None] - torch.arange(k, dtype=torch.float32)


def _hat_weights(n: int, k: int) -> torch.Tensor:
    """(n, k) linear-interpolation weights (trilinear when applied per axis)."""
    return torch.clamp(1.0 - torch.abs(_control_positions(n, k)), min=0)


def _bspline_weights(n: int, k: int) -> torch.Tensor:
    """(n, k) cubic B-spline weights, normalised to sum to 1 per sample.

    The uniform cubic B-spline kernel is C2, so the field is smooth; near the crop's faces some
    of the kernel's support has no control point, and normalising keeps the weights a partition
    of unity there (a convex combination: the field never exceeds the control values).
    """
    t = torch.abs(_control_positions(n, k))
    w = torch.where(t < 1, (4 - 6 * t**2 + 3 * t**3) / 6, torch.clamp(2 - t, min=0) ** 3 / 6)
    return w / w.sum(dim=1, keepdim=True)


_WEIGHTS = {"linear": _hat_weights, "cubic": _bspline_weights}


def _displacement(
    control: torch.Tensor, crop_shape: tuple[int, int, int], interpolation: str = "linear"
) -> torch.Tensor:
    """Upsampling of a (C, K0, K1, K2) control grid to a contiguous (C, *crop_shape).

    ``"linear"`` is numerically equal to ``F.interpolate(control[None], crop_shape,
    mode="trilinear", align_corners=True)[0]``; ``"cubic"`` uses :func:`_bspline_weights` (both
    checked in the tests). Computed as three separable small matrix products, several times
    faster on one CPU core than ``F.interpolate`` for the crops used here.
    """
    weights = _WEIGHTS[interpolation]
    c, k0, k1, k2 = control.shape
    a = torch.einsum("cijk,xi->cxjk", control, weights(crop_shape[0], k0))
    a = torch.einsum("cxjk,yj->cxyk", a, weights(crop_shape[1], k1))
    # last axis as a plain matmul so the result comes out contiguous in (C, X, Y, Z) order
    out = a.reshape(-1, k2) @ weights(crop_shape[2], k2).T
    return out.view(c, *crop_shape)


def _warped_patch(
    center: np.ndarray,
    half_vox: np.ndarray,
    disp_vox: np.ndarray,
    control: np.ndarray,
    shape: tuple[int, ...],
    method: str = "analytic",
    interpolation: str = "linear",
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Warp a cube patch with a smooth random displacement field inside a local crop.

    The warped patch is the pull-back {x : x + d(x) in cube}: output voxel x takes the cube
    indicator at x + d(x). ``method="grid_sample"`` does this literally (cube indicator on the
    crop, ``F.grid_sample`` with linear interpolation, threshold 0.5); ``method="analytic"``
    (default) evaluates the cube test |x + d(x) - c| <= h directly, which gives the same region
    up to half a voxel at the boundary (tested) at a fraction of the cost -- grid_sample needs a
    full 3-channel coordinate grid and 8 reads per voxel, the cube test three comparisons.

    Args:
        center: (3,) patch centre, voxels.
        half_vox: (3,) half edge length, voxels.
        disp_vox: (3,) maximum displacement per axis, voxels.
        control: (3, K, K, K) control-point displacements in [-1, 1] (scaled by ``disp_vox``).
        shape: full volume shape.
        method: "analytic" or "grid_sample".
        interpolation: "linear" or "cubic" upsampling of the control grid (see module doc).

    Returns:
        (crop slices into the full volume, boolean patch mask of the crop's shape).
    """
    margin = np.ceil(disp_vox).astype(int) + 1
    lo = np.maximum(np.floor(center - half_vox).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(center + half_vox).astype(int) + margin + 1, np.asarray(shape))
    crop_shape = tuple(int(h - l) for l, h in zip(lo, hi))
    sl = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    c_crop = center - lo

    # Smooth random field: coarse control grid upsampled to the crop. Both weightings are convex
    # combinations, so |d| <= disp_vox per axis and the margin above is enough; with disp < half
    # edge the centre voxel stays inside its warped patch. The sampling position relative to the
    # centre is p(x) = x + d(x) - centre: the displacement plus one coordinate ramp per axis.
    ctrl = control * disp_vox[:, None, None, None]
    pos = _displacement(torch.from_numpy(ctrl.astype(np.float32)), crop_shape, interpolation)
    for ax in range(3):
        view = [1, 1, 1]
        view[ax] = -1
        pos[ax] += torch.arange(crop_shape[ax], dtype=torch.float32).sub_(float(c_crop[ax])).view(view)

    if method == "analytic":
        # The sampled cube is the voxelised one (voxel centres within half_vox of the centre,
        # as for ND), whose faces lie half a voxel outside its outermost voxel centres; that is
        # also where grid_sample's linear interpolation of it crosses 0.5. With zero displacement
        # the D patch is therefore exactly the ND cube.
        # (Faces are not clipped to the crop, so a patch at the volume edge is not flattened.)
        lo_f = np.ceil(c_crop - half_vox - 1e-9) - 0.5 - c_crop  # faces relative to the centre
        hi_f = np.floor(c_crop + half_vox + 1e-9) + 0.5 - c_crop
        inside = None
        for ax in range(3):
            p = pos[ax]
            test = (p >= float(lo_f[ax])).logical_and_(p <= float(hi_f[ax]))
            inside = test if inside is None else inside.logical_and_(test)
        assert inside is not None
        return sl, inside.numpy()
    if method != "grid_sample":
        raise ValueError(f"unknown method {method!r}")

    ind = np.zeros(crop_shape, dtype=np.float32)
    clo, chi = _cube_bounds(c_crop, half_vox, crop_shape)
    ind[tuple(slice(int(a), int(b)) for a, b in zip(clo, chi))] = 1.0
    # grid_sample wants normalised coordinates in [-1, 1] (align_corners=True: index i ->
    # 2 i / (n - 1) - 1) with the last dim ordered (W, H, D), i.e. reversed array axes.
    grid = torch.stack(
        [(pos[ax] + float(c_crop[ax])) * (2.0 / max(n - 1, 1)) - 1.0
         for ax, n in reversed(list(enumerate(crop_shape)))],
        dim=-1,
    )
    warped = F.grid_sample(
        torch.from_numpy(ind)[None, None],
        grid[None],
        mode="bilinear",  # trilinear for 5-D input
        padding_mode="zeros",
        align_corners=True,
    )[0, 0]
    return sl, (warped >= 0.5).numpy()


def _centre_component(pm: np.ndarray, c_crop: np.ndarray) -> np.ndarray:
    """Keep the 6-connected component of the warped patch that contains the patch centre.

    Where the warp squeezes an edge or corner of the cube thinner than a voxel, the voxelised
    patch can shed specks of a few voxels; one patch should be one connected defect.
    """
    labels = label_components(pm, connectivity=6)
    ci = tuple(int(round(v)) for v in c_crop)
    keep = labels[ci]
    if keep == 0:  # cannot happen with elastic_magnitude < 0.5; fall back to the largest piece
        counts = np.bincount(labels.ravel())
        counts[0] = 0
        keep = int(np.argmax(counts))
    return labels == keep


@contextlib.contextmanager
def _torch_single_thread() -> Iterator[None]:
    """Run the enclosed torch ops on one intra-op thread, restoring the previous setting.

    The per-patch tensors are small (<= ~2 M voxels), so threads gain nothing; on a loaded 2-core
    machine torch's thread pool made mask generation up to ~100x slower (threads waiting on a
    descheduled peer). The setting is process-wide for the few milliseconds this runs.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def make_mask_with_patches(
    skull: np.ndarray,
    spacing_mm: float | Sequence[float],
    cfg: MaskConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[Patch]]:
    """Like :func:`make_mask` but also returns the accepted patches (for pictures and tests)."""
    if skull.ndim != 3:
        raise ValueError(f"skull must be 3-D, got shape {skull.shape}")
    sp = _spacing3(spacing_mm)
    shape = skull.shape
    skull_flat = np.ascontiguousarray(skull).reshape(-1)
    n_skull = int(np.count_nonzero(skull_flat))
    if n_skull == 0:
        raise ValueError("skull is empty: no voxel to centre a patch on")
    cap = cfg.max_removed_fraction * n_skull

    # Draw everything that defines the patch layout first (count, sizes, centres), then the
    # displacement fields, so D and ND configs with the same seed place the same patches.
    n = int(rng.integers(cfg.n_patches[0], cfg.n_patches[1] + 1))
    sizes = rng.uniform(cfg.patch_size_mm[0], cfg.patch_size_mm[1], size=n)
    flat = _sample_centres(skull_flat, n, rng, shape, cfg.centre_min_height)
    centres = np.stack(np.unravel_index(flat, shape), axis=1)
    k = cfg.elastic_control_points
    controls = (
        rng.uniform(-1.0, 1.0, size=(n, 3, k, k, k)) if cfg.deform else [None] * n
    )

    with _torch_single_thread():
        return _place_patches(skull_flat.reshape(shape), sp, cfg, sizes, centres, controls, cap)


def _place_patches(
    skull3: np.ndarray,
    sp: np.ndarray,
    cfg: MaskConfig,
    sizes: np.ndarray,
    centres: np.ndarray,
    controls: np.ndarray | list[None],
    cap: float,
) -> tuple[np.ndarray, list[Patch]]:
    """Build the patches in drawn order, applying the removed-fraction cap (see module doc)."""
    shape = skull3.shape
    mask = np.zeros(shape, dtype=bool)
    patches: list[Patch] = []
    removed_total = 0
    for i in range(len(sizes)):
        c = centres[i].astype(np.float64)
        size_mm = float(sizes[i])
        while True:
            half_vox = size_mm / 2.0 / sp
            if cfg.deform:
                disp_vox = cfg.elastic_magnitude * size_mm / sp
                sl, pm = _warped_patch(c, half_vox, disp_vox, controls[i], shape,
                                       interpolation=cfg.elastic_interpolation)
                pm = _centre_component(pm, c - np.array([s_.start for s_ in sl]))
            else:
                lo, hi = _cube_bounds(c, half_vox, shape)
                sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
                pm = np.ones(tuple(int(b - a) for a, b in zip(lo, hi)), dtype=bool)
            new = pm & ~mask[sl]
            added = int(np.count_nonzero(new & (skull3[sl] != 0)))
            if removed_total + added <= cap:
                break
            if patches:  # over the cap and one patch is already kept: drop this one
                pm = None
                break
            if np.all(half_vox < 0.5):  # a single voxel: keep it (at least one patch)
                break
            size_mm *= 0.75  # the first patch alone exceeds the cap: shrink it
        if pm is None:
            continue
        mask[sl] |= pm
        removed_total += added
        patches.append(Patch(tuple(int(v) for v in centres[i]), size_mm, added))
    return mask, patches


def make_mask(
    skull: np.ndarray,
    spacing_mm: float | Sequence[float],
    cfg: MaskConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Random patch mask: the region to remove from a healthy skull.

    Args:
        skull: 3-D skull volume (nonzero = bone), any dtype.
        spacing_mm: grid spacing in mm, a scalar (isotropic) or one value per axis.
        cfg: mask settings (sizes in mm).
        rng: random generator; the same state gives the same mask.

    Returns:
        Boolean array of ``skull.shape``, True where voxels are removed. Every patch is centred on
        a skull voxel, so every patch removes skull; at most ``cfg.max_removed_fraction`` of the
        skull voxels are removed (patches dropped or the single patch shrunk, see module doc).
    """
    return make_mask_with_patches(skull, spacing_mm, cfg, rng)[0]


def apply_mask(skull: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return a copy of ``skull`` with the masked voxels set to zero (same dtype and shape).

    Args:
        skull: 3-D skull volume.
        mask: boolean array of the same shape, True where voxels are removed.
    """
    if mask.shape != skull.shape:
        raise ValueError(f"mask shape {mask.shape} != skull shape {skull.shape}")
    out = skull.copy()
    np.copyto(out, np.zeros((), dtype=out.dtype), where=mask.astype(bool, copy=False))
    return out


def masking_examples(
    skulls: list[np.ndarray],
    spacing_mm: float | Sequence[float],
    cfg_d: MaskConfig,
    cfg_nd: MaskConfig,
    out_png: str | Path,
    seed: int = 0,
) -> None:
    """Picture of what the network trains on: skull, D-masked and ND-masked, per skull.

    One row per skull; for each of the three orthogonal planes through the centre of the first
    patch, three panels: the skull, the D mask and the ND mask. Remaining bone is light grey,
    removed bone red, and the rest of the mask region (empty space) faint red so the patch shape
    shows. D and ND use the same seed per skull, hence the same patch centres and sizes when the
    two configs share their count/size settings.

    Args:
        skulls: 3-D skull volumes (nonzero = bone).
        spacing_mm: grid spacing in mm (scalar or per axis), used for masks and aspect ratio.
        cfg_d: deformable mask config.
        cfg_nd: non-deformable mask config.
        out_png: output image path (parent folders are created).
        seed: base seed; skull ``i`` uses ``seed + i``.
    """
    # Figure without pyplot: no global backend state, works headless.
    from matplotlib.figure import Figure

    if not skulls:
        raise ValueError("masking_examples needs at least one skull")
    sp = _spacing3(spacing_mm)
    planes = [(0, "axis 0"), (1, "axis 1"), (2, "axis 2")]
    n_rows, n_cols = len(skulls), 9
    fig = Figure(figsize=(2.0 * n_cols, 2.1 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, skull in enumerate(skulls):
        mask_d, patches_d = make_mask_with_patches(skull, sp, cfg_d, np.random.default_rng(seed + r))
        mask_nd, _ = make_mask_with_patches(skull, sp, cfg_nd, np.random.default_rng(seed + r))
        bone = skull != 0
        centre = patches_d[0].center
        for p, (ax_i, ax_name) in enumerate(planes):
            idx: list[slice | int] = [slice(None)] * 3
            idx[ax_i] = centre[ax_i]
            other = [a for a in range(3) if a != ax_i]
            aspect = sp[other[0]] / sp[other[1]]
            for j, (title, m) in enumerate((("skull", None), ("D", mask_d), ("ND", mask_nd))):
                b = bone[tuple(idx)]
                img = np.zeros((*b.shape, 3), dtype=np.float32)
                img[b] = 0.85
                if m is not None:
                    ms = m[tuple(idx)]
                    img[ms & ~b] = (0.35, 0.08, 0.08)
                    img[ms & b] = (1.0, 0.1, 0.1)
                    frac = np.count_nonzero(m & bone) / max(np.count_nonzero(bone), 1)
                    title = f"{title} ({frac:.0%} removed)"
                ax = axes[r, 3 * p + j]
                ax.imshow(np.transpose(img, (1, 0, 2)), origin="lower", aspect=1.0 / aspect,
                          interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{ax_name}={centre[ax_i]}: {title}", fontsize=7)
    fig.suptitle(
        f"Training masks: D = deformed patches, ND = cubes; red = removed bone "
        f"(sizes {cfg_d.patch_size_mm[0]:.0f}-{cfg_d.patch_size_mm[1]:.0f} mm, "
        f"{cfg_d.n_patches[0]}-{cfg_d.n_patches[1]} patches)",
        fontsize=9,
    )
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
