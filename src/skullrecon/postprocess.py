"""From a network output on the original grid to an implant.

The MAE reconstructs the whole skull, so its implant is derived by morphology:
``(reconstruction | defective) -> closing -> minus defective -> opening -> largest component``.
The baselines predict the implant directly: ``prediction minus defective -> opening -> largest
component``. Structuring elements are Euclidean balls in millimetres (anisotropic spacing
honoured): small balls bit-packed (:mod:`skullrecon.morphology`), larger ones by exact distance
transforms (``edt``), both inside a crop around the objects and equal voxel for voxel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from skullrecon import morphology
from skullrecon.settings import from_mapping

__all__ = ["PostprocessConfig", "dilate", "erode", "closing", "opening", "edt_dilate", "edt_erode", "edt_closing",
           "largest_component", "extract_implant",
           "locate_implant", "reference_extract_implant"]


@dataclass
class PostprocessConfig:
    """Args:
    closing_mm: radius of the closing that seals the reconstruction onto the defect's edge
        (MAE only); 0 disables it.
    opening_mm: radius of the opening that removes the thin slivers where a reconstruction is
        slightly thicker than the intact bone; 0 disables it.
    largest_component: keep only the largest 26-connected component of the implant.
    threshold: probability above which a voxel is foreground when going back to the original grid.
    """

    closing_mm: float = 2.0
    opening_mm: float = 1.0
    largest_component: bool = True
    threshold: float = 0.5

    def __post_init__(self) -> None:
        # a threshold of -1 or a NaN radius gives a meaningless implant with no error: refuse them
        for name in ("closing_mm", "opening_mm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1000:
                raise ValueError(f"post-processing {name} must be a radius in mm >= 0, got {value!r}")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
            raise ValueError(f"post-processing threshold must be a probability strictly between 0 and 1, got {t!r}")
        if not isinstance(self.largest_component, bool):
            raise ValueError(f"post-processing largest_component must be true or false, got {self.largest_component!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PostprocessConfig:
        return from_mapping(cls, d, "post-processing")


def _crop(mask: np.ndarray, pad: Sequence[int]) -> tuple[slice, ...] | None:
    idx = np.nonzero(mask.any(axis=(1, 2)))[0], np.nonzero(mask.any(axis=(0, 2)))[0], np.nonzero(mask.any(axis=(0, 1)))[0]
    if any(len(i) == 0 for i in idx):
        return None
    return tuple(slice(max(i[0] - p, 0), min(i[-1] + 1 + p, n)) for i, p, n in zip(idx, pad, mask.shape))


def _threads() -> int:
    """CPU cores this process may use (the cluster job's allocation, not the node's)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _pad_voxels(radius_mm: float, spacing: Sequence[float]) -> list[int]:
    return [int(np.ceil(radius_mm / s)) + 2 for s in spacing]


def dilate(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Voxels within ``radius_mm`` of the mask (Euclidean, in mm)."""
    if morphology.fits(radius_mm, spacing):
        return morphology.packed_dilate(mask, radius_mm, spacing)
    return edt_dilate(mask, radius_mm, spacing)


def erode(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Voxels farther than ``radius_mm`` from the background (outside the array is background)."""
    if morphology.fits(radius_mm, spacing):
        return morphology.packed_erode(mask, radius_mm, spacing)
    return edt_erode(mask, radius_mm, spacing)


def closing(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """``erode(dilate(mask)) | mask``: fills gaps narrower than the ball, never removes a voxel."""
    if morphology.fits(radius_mm, spacing):
        return morphology.packed_closing(mask, radius_mm, spacing)
    return edt_closing(mask, radius_mm, spacing)


def opening(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    return dilate(erode(mask, radius_mm, spacing), radius_mm, spacing) & mask.astype(bool)


def edt_dilate(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """:func:`dilate` by a distance transform of the mask's box (the reference; any radius)."""
    import edt

    mask = mask.astype(bool)
    region = _crop(mask, _pad_voxels(radius_mm, spacing))
    if radius_mm <= 0 or region is None:
        return mask.copy()
    out = np.zeros_like(mask)
    dist = edt.edt(~mask[region], anisotropy=tuple(float(s) for s in spacing), black_border=False,
                   parallel=_threads())
    out[region] = dist <= radius_mm
    return out


def edt_erode(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """:func:`erode` by a distance transform (the reference; any radius)."""
    import edt

    mask = mask.astype(bool)
    region = _crop(mask, [1, 1, 1])
    if radius_mm <= 0 or region is None:
        return mask.copy()
    padded = np.pad(mask[region], 1)  # keeps the array edge as background
    dist = edt.edt(padded, anisotropy=tuple(float(s) for s in spacing), black_border=True,
                   parallel=_threads())[1:-1, 1:-1, 1:-1]
    out = np.zeros_like(mask)
    out[region] = dist > radius_mm
    return out


def edt_closing(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    return edt_erode(edt_dilate(mask, radius_mm, spacing), radius_mm, spacing) | mask.astype(bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component (an empty mask stays empty)."""
    return morphology.largest_component(mask, connectivity=26)


def extract_implant(
    prediction: np.ndarray,
    defective: np.ndarray,
    spacing: Sequence[float],
    task: str,
    cfg: PostprocessConfig | None = None,
) -> np.ndarray:
    """The implant (uint8 0/1) on the original grid.

    Equal to :func:`reference_extract_implant` (the rule applied to the whole volume by distance
    transforms). Small balls are worked bit-packed (:mod:`skullrecon.morphology`). Without
    ``largest_component`` the implant may be wherever the prediction is thicker than the bone, so
    the rule covers the skull's whole box; with it the work is done only where the implant can be: a coarse look
    (:func:`locate_implant`) finds where the prediction has thick bone that the defective skull
    lacks; the rule then runs on a box around it plus a halo as wide as the morphology reaches
    (``2 (closing_mm + opening_mm)``), so every voxel of the box gets its whole-volume value. If
    the largest component of the box touches the box's side (or the box has none) the box grows,
    up to the whole volume. What this assumes: no part of the opened difference outside the box
    outgrows the one found (slivers thinner than the opening never survive it).

    Args:
        prediction: binary network output on the original grid: the whole reconstructed skull
            (``task='reconstruct'``, the MAE) or the implant (``task='implant'``, the baselines).
        defective: the defective skull on the same grid.
        spacing: voxel size in mm.
    """
    cfg = cfg or PostprocessConfig()
    _check(prediction, defective, task)
    if not cfg.largest_component or not prediction.any():
        return _whole_volume(prediction, defective, spacing, task, cfg, by_edt=False)
    box = locate_implant(prediction, defective)
    if box is None:
        return _whole_volume(prediction, defective, spacing, task, cfg, by_edt=False)
    # a ball of radius r reaches floor(r / spacing) voxels along an axis; one more for rounding
    r_open = _reach(cfg.opening_mm, spacing)
    r_close = _reach(cfg.closing_mm if task == "reconstruct" else 0.0, spacing)
    halo = [2 * (o + c) for o, c in zip(r_open, r_close)]
    margin = _reach(4.0, spacing)  # the eroded coarse core lies a few voxels inside the implant's edge
    shape = prediction.shape
    while True:
        inner = _grow(box, margin, shape)
        outer = _grow(inner, halo, shape)
        if all(o.start == 0 and o.stop == n for o, n in zip(outer, shape)):
            return _whole_volume(prediction, defective, spacing, task, cfg, by_edt=False)
        opened = _opened_difference(prediction[outer], defective[outer], spacing, task, cfg,
                                    _within(inner, outer), r_open, r_close)
        part = largest_component(opened)
        if part.any() and not _touches_side(part, inner, shape):
            out = np.zeros_like(prediction, dtype=np.uint8)  # the input's memory order, as the reference
            out[inner] = part
            return out
        margin = [2 * m + 1 for m in margin]


def _reach(radius_mm: float, spacing: Sequence[float]) -> list[int]:
    return [int(radius_mm // s) + 1 if radius_mm > 0 else 0 for s in spacing]


def _grow(box: tuple[slice, ...], by: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(b.start - m, 0), min(b.stop + m, n)) for b, m, n in zip(box, by, shape))


def _within(inner: tuple[slice, ...], outer: tuple[slice, ...]) -> tuple[slice, ...]:
    """``inner`` in the indices of an array cropped to ``outer``."""
    return tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer))


def locate_implant(prediction: np.ndarray, defective: np.ndarray, share: float = 0.1) -> tuple[slice, ...] | None:
    """Box (original indices) around the thick parts of ``prediction & ~defective``.

    Looked at every second voxel: the difference is eroded by one (coarse) voxel, which removes
    the thin slivers a prediction leaves all over the skull, and the bounding box of its
    26-connected components of at least ``share`` of the largest one's size is returned. None
    when nothing thick is left (then the caller uses the whole volume).
    """
    import cc3d

    if prediction.flags.f_contiguous and not prediction.flags.c_contiguous:
        # NIfTI/NRRD readers give Fortran order: strided reads are only fast along memory order
        box = locate_implant(prediction.T, defective.T, share)
        return None if box is None else box[::-1]
    diff = prediction[::2, ::2, ::2] != 0
    diff &= defective[::2, ::2, ::2] == 0
    core = diff.copy()
    for ax in range(3):  # erosion by the 6-connected cross; the array's edge counts as background
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        core[tuple(lo)] &= diff[tuple(hi)]
        core[tuple(hi)] &= diff[tuple(lo)]
        edge = [slice(None)] * 3
        for i in (0, -1):
            edge[ax] = i
            core[tuple(edge)] = False
    region = _crop(core, [0, 0, 0])
    if region is None:
        return None
    labels = morphology.label_components(core[region], connectivity=26)
    stats = cc3d.statistics(labels)
    sizes = np.asarray(stats["voxel_counts"])[1:]
    keep = np.flatnonzero(sizes >= share * sizes.max()) + 1
    boxes = [stats["bounding_boxes"][k] for k in keep]
    return tuple(slice(2 * (r.start + min(b[ax].start for b in boxes)),
                       min(2 * (r.start + max(b[ax].stop for b in boxes)) + 1, n))
                 for ax, (r, n) in enumerate(zip(region, prediction.shape)))


def _touches_side(part: np.ndarray, box: tuple[slice, ...], shape: Sequence[int]) -> bool:
    """Whether ``part`` (cropped to ``box``) reaches a side of the box inside the volume."""
    for ax, (b, n) in enumerate(zip(box, shape)):
        index = [slice(None)] * 3
        for i, inside in ((0, b.start > 0), (-1, b.stop < n)):
            index[ax] = i
            if inside and part[tuple(index)].any():
                return True
    return False


def _check(prediction: np.ndarray, defective: np.ndarray, task: str) -> None:
    if prediction.shape != defective.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from the defective skull's {defective.shape}")
    if task not in ("reconstruct", "implant"):
        raise ValueError(f"task must be 'reconstruct' or 'implant', got {task!r}")


def _opened_difference(prediction: np.ndarray, defective: np.ndarray, spacing: Sequence[float], task: str,
                       cfg: PostprocessConfig, keep: tuple[slice, ...] | None = None,
                       r_open: Sequence[int] = (0, 0, 0), r_close: Sequence[int] = (0, 0, 0),
                       by_edt: bool = False) -> np.ndarray:
    """The rule up to (not including) the largest component, as a bool array.

    With ``keep`` (a box of the arrays) only the voxels of that box are returned, and each step
    works only on the box grown by what the later steps still reach (``r_open``/``r_close``
    voxels per axis for the opening/closing radii): the values in ``keep`` are those of the
    whole arrays, provided ``keep`` grown by ``2 (r_open + r_close)`` lies within them.
    ``by_edt``: the distance-transform morphology (the reference) instead of the bit-packed one.
    """
    close, erode_, dilate_ = (edt_closing, edt_erode, edt_dilate) if by_edt else (closing, erode, dilate)
    full = tuple(slice(0, n) for n in prediction.shape)
    keep = keep or full
    shape = prediction.shape

    def region(*reach: Sequence[int]) -> tuple[slice, ...]:
        if keep is full:
            return full
        return _grow(keep, [sum(r[a] for r in reach) for a in range(3)], shape)

    d = defective.astype(bool)
    if task == "reconstruct":
        r1 = region(r_open, r_open, r_close)  # where the closing's dilation is needed
        x = prediction[r1].astype(bool) | d[r1]
        r2 = region(r_open, r_open)  # where the closing is needed
        pred = close(x, cfg.closing_mm, spacing)[_within(r2, r1)]
    else:
        r2 = region(r_open, r_open)
        pred = prediction[r2].astype(bool)
    implant = pred & ~d[r2]
    if cfg.opening_mm > 0:
        r3 = region(r_open)
        eroded = erode_(implant[_within(r3, r2)], cfg.opening_mm, spacing)
        implant = dilate_(eroded, cfg.opening_mm, spacing)[_within(keep, r3)] & implant[_within(keep, r2)]
    else:
        implant = implant[_within(keep, r2)]
    return implant


def reference_extract_implant(
    prediction: np.ndarray,
    defective: np.ndarray,
    spacing: Sequence[float],
    task: str,
    cfg: PostprocessConfig | None = None,
) -> np.ndarray:
    """The rule on the whole volume by distance transforms (same arguments as :func:`extract_implant`).

    What the library did before the bit-packed morphology and the box around the implant: kept as
    the reference for tests and benchmarks.
    """
    cfg = cfg or PostprocessConfig()
    _check(prediction, defective, task)
    return _whole_volume(prediction, defective, spacing, task, cfg, by_edt=True)


def _whole_volume(prediction: np.ndarray, defective: np.ndarray, spacing: Sequence[float], task: str,
                  cfg: PostprocessConfig, by_edt: bool) -> np.ndarray:
    if not prediction.any():  # a failed case stays empty (not the closing's fill of gaps in the defective skull)
        return np.zeros(defective.shape, np.uint8)
    implant = _opened_difference(prediction, defective, spacing, task, cfg, by_edt=by_edt)
    if cfg.largest_component:
        implant = largest_component(implant)
    return implant.astype(np.uint8)
