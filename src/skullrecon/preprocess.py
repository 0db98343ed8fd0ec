"""Centre, crop to the skull and resample to a cubic grid, invertibly.

The crop is a cube in millimetres around the skull's bounding box, so the network sees isotropic
voxels whatever the scan's spacing. :class:`Geometry` records everything needed to put a grid
prediction back onto the original voxel grid (:func:`from_grid`), which is the exact inverse
mapping of :func:`to_grid` (area averaging down, trilinear interpolation up, with the same voxel
centre convention).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Geometry", "plan_crop", "to_grid", "from_grid", "bounding_box", "reference_to_grid",
           "reference_from_grid", "reference_preprocess_split"]


@dataclass(frozen=True)
class Geometry:
    """Where the network's cube lies in the original volume.

    Args:
        shape: original array shape (voxels).
        spacing: original voxel size in mm per axis.
        box_start: first voxel of the crop box in original indices (may be negative: padding).
        box_size: crop box size in original voxels per axis (a cube in mm).
        grid: edge of the network's cubic grid in voxels.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    box_start: tuple[int, int, int]
    box_size: tuple[int, int, int]
    grid: int

    @property
    def grid_spacing(self) -> tuple[float, float, float]:
        """Voxel size of the grid in mm (isotropic up to rounding of the box)."""
        return tuple(b * s / self.grid for b, s in zip(self.box_size, self.spacing))  # type: ignore[return-value]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Geometry:
        d = json.loads(text)
        return cls(
            shape=tuple(d["shape"]),
            spacing=tuple(d["spacing"]),
            box_start=tuple(d["box_start"]),
            box_size=tuple(d["box_size"]),
            grid=int(d["grid"]),
        )


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive-start, exclusive-stop voxel bounds of the non-zero voxels."""
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(i) == 0 for i in idx):
        raise ValueError("cannot crop an empty volume: no foreground voxels")
    return np.array([i[0] for i in idx]), np.array([i[-1] + 1 for i in idx])


def plan_crop(mask: np.ndarray, spacing: Sequence[float], grid: int, margin: float = 0.1) -> Geometry:
    """Plan a cube (in mm) centred on the skull's bounding box.

    Args:
        mask: the skull (the defective skull at test time, so train and test are cropped alike).
        spacing: voxel size in mm per axis.
        grid: the network's grid edge in voxels (256 in the paper).
        margin: extra room around the largest bounding-box extent, as a fraction; it leaves
            space for bone that a defect removed from the edge of the skull.
    """
    if grid < 8:
        raise ValueError(f"grid must be at least 8 voxels, got {grid}")
    if margin < 0:
        raise ValueError(f"margin must be non-negative, got {margin}")
    spacing_arr = np.asarray(spacing, float)
    lo, hi = bounding_box(mask)
    side_mm = float(((hi - lo) * spacing_arr).max() * (1.0 + margin))
    size = np.array([max(1, math.ceil(side_mm / s)) for s in spacing_arr])
    centre = (lo + hi) / 2.0
    start = np.floor(centre - size / 2.0 + 0.5).astype(int)
    return Geometry(
        shape=tuple(int(v) for v in mask.shape),
        spacing=tuple(float(v) for v in spacing_arr),
        box_start=tuple(int(v) for v in start),
        box_size=tuple(int(v) for v in size),
        grid=int(grid),
    )


def _overlap(geom: Geometry) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices of the original volume and of the box that cover the same voxels."""
    src, dst = [], []
    for start, size, n in zip(geom.box_start, geom.box_size, geom.shape):
        a, b = max(start, 0), min(start + size, n)
        if b <= a:
            raise ValueError(f"crop box does not overlap the volume (start {start}, size {size}, shape {n})")
        src.append(slice(a, b))
        dst.append(slice(a - start, b - start))
    return tuple(src), tuple(dst)


def _area_bins(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop input index of every output bin of ``F.interpolate(mode="area")``.

    That mode is ``adaptive_avg_pool``: bin ``i`` averages ``[floor(i n_in / n_out),
    ceil((i + 1) n_in / n_out))``; neighbouring bins may share a voxel.
    """
    i = np.arange(n_out, dtype=np.int64)
    return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)


def to_grid(volume: np.ndarray, geom: Geometry) -> np.ndarray:
    """Crop ``volume`` to the box (zero padded outside) and area-average it to ``grid``^3.

    Returns the fraction of each grid voxel covered by the volume (float32 in [0, 1]), equal bit
    for bit to :func:`reference_to_grid` (torch's ``mode="area"``): the bins are separable, so their
    voxel counts are summed one axis at a time in integers and divided as torch divides
    (``sum / kd / kh / kw`` in float32). Only the part of the box holding foreground is read.
    """
    if tuple(volume.shape) != geom.shape:
        raise ValueError(f"volume shape {volume.shape} differs from the planned {geom.shape}")
    out = np.zeros((geom.grid,) * 3, np.float32)
    if volume.flags.f_contiguous and not volume.flags.c_contiguous:
        # NIfTI/NRRD arrays are Fortran-ordered: sum on the transposed (C-ordered) view, whose
        # separable sums are the same, rather than copy the volume across memory orders
        flipped = Geometry(geom.shape[::-1], geom.spacing[::-1], geom.box_start[::-1], geom.box_size[::-1], geom.grid)
        found = _bin_counts(volume.T, flipped)
        if found is None:
            return out
        summed, box = found[0].T, found[1][::-1]
    else:
        found = _bin_counts(volume, geom)
        if found is None:
            return out
        summed, box = found
    kd, kh, kw = (np.subtract(*_area_bins(b, geom.grid)[::-1]).astype(np.float32) for b in geom.box_size)
    frac = summed.astype(np.float32)
    frac /= kd[box[0], None, None]
    frac /= kh[None, box[1], None]
    frac /= kw[None, None, box[2]]
    out[box] = frac
    return out


def _bin_counts(volume: np.ndarray, geom: Geometry) -> tuple[np.ndarray, tuple[slice, ...]] | None:
    """Foreground voxels per area bin, for the grid box that can hold foreground (None: none)."""
    src, dst = _overlap(geom)
    g = geom.grid
    part = volume[src]
    if not part.any():
        return None
    # Sum only over bins that can see foreground: the rest stay 0 (padding is background too).
    lo, hi = bounding_box(part)
    ranges = []
    for ax in range(3):
        start, stop = _area_bins(geom.box_size[ax], g)
        f0, f1 = dst[ax].start + lo[ax], dst[ax].start + hi[ax]  # foreground extent, box indices
        hit = np.flatnonzero((stop > f0) & (start < f1))
        ranges.append((int(hit[0]), int(hit[-1]) + 1, int(start[hit[0]]), int(stop[hit[-1]])))
    # the box sub-range that those bins read, zero padded where it leaves the volume
    sub = np.zeros(tuple(r[3] - r[2] for r in ranges), np.uint8)
    take, put = [], []
    for ax, r in enumerate(ranges):
        a, b = max(r[2], dst[ax].start), min(r[3], dst[ax].stop)
        take.append(slice(src[ax].start + a - dst[ax].start, src[ax].start + b - dst[ax].start))
        put.append(slice(a - r[2], b - r[2]))
    sub[tuple(put)] = volume[tuple(take)] != 0
    widths = [np.subtract(*_area_bins(b, g)[::-1]) for b in geom.box_size]
    dtype = np.int16 if np.prod([w.max() for w in widths]) < 2**15 else np.int32
    summed = sub
    for ax, r in enumerate(ranges):
        # bins r[0]:r[1] of the full axis, read relative to the sub-range's start r[2]
        start, stop = _area_bins(geom.box_size[ax], g)
        summed = _sum_bins(summed, ax, start[r[0]:r[1]] - r[2], stop[r[0]:r[1]] - r[2], dtype)
    return summed, tuple(slice(r[0], r[1]) for r in ranges)


def _sum_bins(counts: np.ndarray, axis: int, start: np.ndarray, stop: np.ndarray, dtype) -> np.ndarray:
    """Sums of ``counts`` over the bins ``[start, stop)`` of ``axis`` (integers, so exact)."""
    width = stop - start
    shape = [1, 1, 1]
    shape[axis] = len(start)
    out = np.take(counts, start, axis=axis).astype(dtype)
    for k in range(1, int(width.max())):  # at most ceil(n_in / n_out) + 1 terms
        last = np.minimum(start + k, counts.shape[axis] - 1)
        out += np.take(counts, last, axis=axis) * (width > k).reshape(shape).astype(dtype)
    return out


def reference_to_grid(volume: np.ndarray, geom: Geometry) -> np.ndarray:
    """:func:`to_grid` the straightforward way (the whole box through torch); kept for tests and benchmarks."""
    if tuple(volume.shape) != geom.shape:
        raise ValueError(f"volume shape {volume.shape} differs from the planned {geom.shape}")
    src, dst = _overlap(geom)
    box = torch.zeros(geom.box_size, dtype=torch.float32)
    box[dst] = torch.from_numpy(np.ascontiguousarray(volume[src])).float()
    out = F.interpolate(box[None, None], size=(geom.grid,) * 3, mode="area")
    return out[0, 0].numpy()


def _linear(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """torch's trilinear interpolation (``align_corners=False``) of ``x`` resized along ``axis`` only.

    Trilinear interpolation in torch equals, bit for bit, three 1-D passes (W, then H, then D;
    tested): the last axis and the first (moved last; the result is a view with it fastest in
    memory, as a Fortran-ordered volume wants) go through 1-D ``linear``, the middle one through
    ``trilinear`` with the other axes kept (their weights are exactly 1 and 0).
    """
    return _linear_tensor(torch.from_numpy(x), axis, n_out).numpy()


def _linear_tensor(t: torch.Tensor, axis: int, n_out: int) -> torch.Tensor:
    """:func:`_linear` of a tensor, on its device."""
    if axis == 1:
        size = list(t.shape)
        size[axis] = n_out
        return F.interpolate(t.contiguous()[None, None], size=tuple(size), mode="trilinear", align_corners=False)[0, 0]
    moved = t.movedim(axis, -1).contiguous()
    out = F.interpolate(moved.reshape(1, -1, moved.shape[-1]), size=n_out, mode="linear", align_corners=False)
    return out.reshape(moved.shape[:-1] + (n_out,)).movedim(-1, axis)


def _linear_sources(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The two input indices each output of :func:`_linear` reads (widened by one for rounding)."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0)
    i0 = np.clip(np.floor(src).astype(np.int64) - 1, 0, n_in - 1)
    return i0, np.minimum(i0 + 3, n_in)


def from_grid(values: np.ndarray | torch.Tensor, geom: Geometry, threshold: float | None = 0.5,
              region: tuple[slice, ...] | None = None, order: str = "C") -> np.ndarray:
    """Put a grid array (probabilities or a mask) back onto the original voxel grid.

    Trilinear interpolation inverts :func:`to_grid`'s voxel mapping; voxels of the box outside
    the original volume are dropped and voxels outside the box are zero.

    Equal to :func:`reference_from_grid`, but only the original voxels that can reach
    ``threshold`` are interpolated: those next to a grid voxel at or above it (interpolation
    cannot exceed its inputs by more than rounding, allowed for), within ``region`` (original
    indices) when given; the rest are 0.

    Returns uint8 0/1 when ``threshold`` is given, else float32 (then ``region`` still applies),
    in memory ``order`` "C" or "F" (NIfTI/NRRD volumes are Fortran-ordered; mixing orders in
    element-wise steps at 512^3 is slow).

    ``values`` may be a torch tensor (a network's output on its GPU): then interpolation and
    threshold run on its device and only the result's box is copied back (uint8 with a threshold);
    on the CPU the same torch operations as for an array, so the same voxels.
    """
    if tuple(values.shape) != (geom.grid,) * 3:
        raise ValueError(f"expected a {geom.grid}^3 grid, got {tuple(values.shape)}")
    src, dst = _overlap(geom)
    out = np.zeros(geom.shape, np.uint8 if threshold is not None else np.float32, order=order)
    on_device = isinstance(values, torch.Tensor)
    if threshold is None:
        active = values != 0  # interpolating zeros gives exactly 0
    elif threshold > 0:
        active = values >= threshold * (1 - 1e-5)
    else:
        active = torch.ones_like(values, dtype=torch.bool) if on_device else np.ones(values.shape, bool)
    if not active.any():
        return out
    if on_device:  # bounds from each axis' projection: a grid edge of booleans copied back, not the grid
        idx = [np.flatnonzero(active.any(dim=tuple(a for a in range(3) if a != ax)).cpu().numpy()) for ax in range(3)]
        glo, ghi = np.array([i[0] for i in idx]), np.array([i[-1] + 1 for i in idx])
    else:
        glo, ghi = bounding_box(active)
    region = region or tuple(slice(0, n) for n in geom.shape)
    want, need = [], []  # per axis: box output range; grid input range
    for ax in range(3):
        i0, i1 = _linear_sources(geom.grid, geom.box_size[ax])
        reg = region[ax].indices(geom.shape[ax])
        b0 = max(dst[ax].start, reg[0] - geom.box_start[ax])
        b1 = min(dst[ax].stop, reg[1] - geom.box_start[ax])
        hit = np.flatnonzero((i1 > glo[ax]) & (i0 < ghi[ax]))
        if b1 <= b0 or hit.size == 0:
            return out
        b0, b1 = max(b0, int(hit[0])), min(b1, int(hit[-1]) + 1)
        if b1 <= b0:
            return out
        want.append((b0, b1))
        need.append((int(i0[b0:b1].min()), int(i1[b0:b1].max())))
    if on_device:
        x, zeros, linear = values[tuple(slice(a, b) for a, b in need)].float(), torch.zeros, _linear_tensor
        kind = {"dtype": torch.float32, "device": values.device}
    else:
        x = np.ascontiguousarray(values[tuple(slice(a, b) for a, b in need)], dtype=np.float32)
        zeros, linear, kind = np.zeros, _linear, {"dtype": np.float32}
    for ax in (2, 1, 0):  # torch's order: innermost axis first
        full = zeros(x.shape[:ax] + (geom.grid,) + x.shape[ax + 1:], **kind)
        idx = [slice(None)] * 3
        idx[ax] = slice(*need[ax])
        full[tuple(idx)] = x  # the rest of the axis is never read by the outputs kept
        idx[ax] = slice(*want[ax])
        x = linear(full, ax, geom.box_size[ax])[tuple(idx)]
    place = tuple(slice(a + s, b + s) for (a, b), s in zip(want, geom.box_start))
    if threshold is not None:
        x = x >= threshold
    if on_device:  # thresholded on the device: a uint8 box comes back
        x = (x.to(torch.uint8) if threshold is not None else x).cpu().numpy()
    out[place] = x
    return out


def reference_from_grid(values: np.ndarray, geom: Geometry, threshold: float | None = 0.5) -> np.ndarray:
    """:func:`from_grid` the straightforward way (the whole box through torch); kept for tests and benchmarks."""
    if values.shape != (geom.grid,) * 3:
        raise ValueError(f"expected a {geom.grid}^3 grid, got {values.shape}")
    src, dst = _overlap(geom)
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None]
    box = F.interpolate(t, size=geom.box_size, mode="trilinear", align_corners=False)[0, 0]
    part = box[dst].numpy()
    if threshold is None:
        out = np.zeros(geom.shape, np.float32)
        out[src] = part
    else:
        out = np.zeros(geom.shape, np.uint8)
        out[src] = part >= threshold
    return out


def preprocess_volume(mask: np.ndarray, spacing: Sequence[float], grid: int, margin: float) -> tuple[np.ndarray, Geometry]:
    """Plan the crop from ``mask`` and return its binary grid (uint8) with the geometry."""
    geom = plan_crop(mask, spacing, grid, margin)
    return (to_grid(mask, geom) >= 0.5).astype(np.uint8), geom


_BITS = ".bits"  # suffix of a bit-packed binary array in a case file


def save_case(path, geometry: Geometry, **arrays: np.ndarray) -> None:
    """One preprocessed case: binary grids plus the geometry that inverts them (atomic write).

    Binary grids are stored bit-packed (``np.packbits``) and compressed: a 256^3 grid is ~0.1 MB
    and loads in about half the time of a compressed uint8 array (``bench/loader.py``), which is
    what a training worker does for every case of every epoch.
    """
    from skullrecon.io import atomic_path

    stored = {}
    for name, a in arrays.items():
        if a.dtype == bool or (a.dtype == np.uint8 and a.max(initial=0) <= 1):
            stored[name + _BITS] = np.packbits(a.astype(bool, copy=False))
            stored[name + ".shape"] = np.array(a.shape)
        else:
            stored[name] = a
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, geometry=np.array(geometry.to_json()), **stored)


def load_case(path) -> tuple[dict[str, np.ndarray], Geometry]:
    """Arrays (binary ones as uint8 0/1) and geometry of a file written by :func:`save_case`.

    Files of the earlier layout (plain uint8 arrays) load the same.
    """
    with np.load(path) as data:
        arrays = {}
        for key in data.files:
            if key.endswith(_BITS):
                name = key[: -len(_BITS)]
                shape = tuple(int(n) for n in data[name + ".shape"])
                arrays[name] = np.unpackbits(data[key], count=int(np.prod(shape))).reshape(shape)
            elif key != "geometry" and not key.endswith(".shape"):
                arrays[key] = data[key]
        geom = Geometry.from_json(str(data["geometry"]))
    return arrays, geom


def preprocess_split(root, layout, split: str, out_dir, grid: int, margin: float = 0.1, log=print) -> dict:
    """Validate and preprocess one split of a dataset into ``out_dir``.

    Writes ``cases/<name>.npz`` (defective skull and, where known, implant; cropped by the
    defective skull, as at test time), ``healthy/<id>.npz`` for the training split (complete
    skulls, cropped by themselves: the MAE's training data), and ``cases.tsv`` listing the
    source files, so every grid can be traced and inverted. Each file is read once: it is checked
    (:func:`~skullrecon.datasets.validate_cases`) and preprocessed from the same read, into a
    hidden folder beside ``out_dir`` that is moved into place only when the whole split is good
    (a broken dataset writes nothing; every problem is reported together).
    """
    import os
    import shutil
    from pathlib import Path

    import pandas as pd

    from skullrecon.datasets import list_cases, list_healthy, validate_cases

    final = Path(out_dir)
    stage = final.with_name(f".{final.name}.partial")
    cases = list_cases(root, layout, split)
    healthy = list_healthy(root, layout, split) if split == "train" else []
    rows = []

    def on_case(case, volumes) -> None:  # each file is read once: checked and preprocessed together
        defective = volumes["defective"]
        grid_def, geom = preprocess_volume(defective.array, defective.spacing, grid, margin)
        arrays = {"defective": grid_def}
        if "implant" in volumes:
            arrays["implant"] = (to_grid(volumes["implant"].array, geom) >= 0.5).astype(np.uint8)
        save_case(stage / "cases" / f"{case.name}.npz", geom, **arrays)
        rows.append({"name": case.name, "case_id": case.case_id, "defect_type": case.defect_type or "",
                     "defective": str(case.defective), "implant": str(case.implant or ""),
                     "complete": str(case.complete or "")})
        log(f"{case.name}: box {geom.box_size} -> {grid}^3 at {np.round(geom.grid_spacing, 3).tolist()} mm")

    def on_healthy(case_id, skull) -> None:
        grid_skull, geom = preprocess_volume(skull.array, skull.spacing, grid, margin)
        save_case(stage / "healthy" / f"{case_id}.npz", geom, complete=grid_skull)

    shutil.rmtree(stage, ignore_errors=True)  # left by a killed run
    try:
        validate_cases(cases, healthy, require_ground_truth=split == "train", on_healthy=on_healthy, on_case=on_case)
        pd.DataFrame(rows).to_csv(stage / "cases.tsv", sep="\t", index=False)
        if split == "test":  # which cases are scored (a test folder or held-out training skulls), for Table I
            from skullrecon.datasets import scored_on

            (stage / "scored_on.txt").write_text(scored_on(root, layout) + "\n")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)  # a broken dataset writes nothing
        raise
    final.mkdir(parents=True, exist_ok=True)
    for item in stage.iterdir():
        if (final / item.name).is_dir():
            shutil.rmtree(final / item.name)
        os.replace(item, final / item.name)
    stage.rmdir()
    return {"cases": len(rows), "healthy": len(healthy)}


def reference_preprocess_split(root, layout, split: str, out_dir, grid: int, margin: float = 0.1, log=print) -> dict:
    """:func:`preprocess_split` as it was: validate every file, then read it again to preprocess
    (with the whole-box :func:`reference_to_grid`); kept for benchmarks."""
    from pathlib import Path

    import pandas as pd

    from skullrecon.datasets import list_cases, list_healthy, validate_cases
    from skullrecon.io import read_volume

    def grid_of(mask, spacing):
        geom = plan_crop(mask, spacing, grid, margin)
        return (reference_to_grid(mask, geom) >= 0.5).astype(np.uint8), geom

    out_dir = Path(out_dir)
    cases = list_cases(root, layout, split)
    healthy = list_healthy(root, layout, split) if split == "train" else []
    validate_cases(cases, healthy, require_ground_truth=split == "train")
    rows = []
    for case in cases:
        defective = read_volume(case.defective)
        grid_def, geom = grid_of(defective.array, defective.spacing)
        arrays = {"defective": grid_def}
        if case.implant is not None:
            arrays["implant"] = (reference_to_grid(read_volume(case.implant).array, geom) >= 0.5).astype(np.uint8)
        save_case(out_dir / "cases" / f"{case.name}.npz", geom, **arrays)
        rows.append({"name": case.name, "case_id": case.case_id, "defect_type": case.defect_type or "",
                     "defective": str(case.defective), "implant": str(case.implant or ""),
                     "complete": str(case.complete or "")})
    for case_id, path in healthy:
        skull = read_volume(path)
        grid_skull, geom = grid_of(skull.array, skull.spacing)
        save_case(out_dir / "healthy" / f"{case_id}.npz", geom, complete=grid_skull)
    pd.DataFrame(rows).to_csv(out_dir / "cases.tsv", sep="\t", index=False)
    if split == "test":  # which cases are scored (a test folder or held-out training skulls), for Table I
        from skullrecon.datasets import scored_on

        (out_dir / "scored_on.txt").write_text(scored_on(root, layout) + "\n")
    return {"cases": len(rows), "healthy": len(healthy)}
