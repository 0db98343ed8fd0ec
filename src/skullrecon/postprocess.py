"""From a network output on the original grid to an implant.

The MAE reconstructs the whole skull, so its implant is derived by morphology:
``(reconstruction | defective) -> closing -> minus defective -> opening -> largest component``.
The baselines predict the implant directly: ``prediction minus defective -> opening -> largest
component``. Structuring elements are Euclidean balls in millimetres (anisotropic spacing
honoured), computed with exact distance transforms (``edt``) inside a crop around the objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from skullrecon.settings import from_mapping

__all__ = ["PostprocessConfig", "dilate", "erode", "closing", "opening", "largest_component", "extract_implant"]


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


def _pad_voxels(radius_mm: float, spacing: Sequence[float]) -> list[int]:
    return [int(np.ceil(radius_mm / s)) + 2 for s in spacing]


def dilate(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Voxels within ``radius_mm`` of the mask (Euclidean, in mm)."""
    import edt

    mask = mask.astype(bool)
    region = _crop(mask, _pad_voxels(radius_mm, spacing))
    if radius_mm <= 0 or region is None:
        return mask.copy()
    out = np.zeros_like(mask)
    dist = edt.edt(~mask[region], anisotropy=tuple(float(s) for s in spacing), black_border=False)
    out[region] = dist <= radius_mm
    return out


def erode(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Voxels farther than ``radius_mm`` from the background (outside the array is background)."""
    import edt

    mask = mask.astype(bool)
    region = _crop(mask, [1, 1, 1])
    if radius_mm <= 0 or region is None:
        return mask.copy()
    padded = np.pad(mask[region], 1)  # keeps the array edge as background
    dist = edt.edt(padded, anisotropy=tuple(float(s) for s in spacing), black_border=True)[1:-1, 1:-1, 1:-1]
    out = np.zeros_like(mask)
    out[region] = dist > radius_mm
    return out


def closing(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    return erode(dilate(mask, radius_mm, spacing), radius_mm, spacing) | mask.astype(bool)


def opening(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    return dilate(erode(mask, radius_mm, spacing), radius_mm, spacing) & mask.astype(bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component (an empty mask stays empty)."""
    import cc3d

    if not mask.any():
        return mask.astype(bool)
    return cc3d.largest_k(mask.astype(np.uint8), k=1, connectivity=26) > 0


def extract_implant(
    prediction: np.ndarray,
    defective: np.ndarray,
    spacing: Sequence[float],
    task: str,
    cfg: PostprocessConfig | None = None,
) -> np.ndarray:
    """The implant (uint8 0/1) on the original grid.

    Args:
        prediction: binary network output on the original grid: the whole reconstructed skull
            (``task='reconstruct'``, the MAE) or the implant (``task='implant'``, the baselines).
        defective: the defective skull on the same grid.
        spacing: voxel size in mm.
    """
    cfg = cfg or PostprocessConfig()
    if prediction.shape != defective.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from the defective skull's {defective.shape}")
    if task not in ("reconstruct", "implant"):
        raise ValueError(f"task must be 'reconstruct' or 'implant', got {task!r}")
    if not prediction.any():  # a failed case stays empty (not the closing's fill of gaps in the defective skull)
        return np.zeros(defective.shape, np.uint8)
    defective = defective.astype(bool)
    pred = prediction.astype(bool)
    if task == "reconstruct":
        pred = closing(pred | defective, cfg.closing_mm, spacing)
    implant = pred & ~defective
    if cfg.opening_mm > 0:
        implant = opening(implant, cfg.opening_mm, spacing)
    if cfg.largest_component:
        implant = largest_component(implant)
    return implant.astype(np.uint8)
