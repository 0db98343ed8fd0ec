"""A statistical shape model of the skull's surfaces, learned from healthy skulls only, for the surface stage.

The surface stage (:mod:`skullrecon.surfaces`) continues the radii of the skull's outer and inner surface over the
hole by the harmonic fill: no overshoot, but a harmonic function has no bulge inside the hole, and the skull bulges.
Healthy skulls know how it bulges. Each healthy skull's two radius charts (rays from the middle of its bone's box,
a fixed chart with axis 0 as the pole) become a vector; their mean and first principal modes are the model. For a
defective skull the model is fitted, by ridge least squares (each mode's prior its variance among the skulls, the
rays' noise ``noise_mm``), to the radii the skull has around the hole (not in it), with a shift of the centre as
three more terms (the middle of a defective skull's box moves with the defect); the rim's misfit is continued over
the hole by the harmonic fill and added, so the surfaces meet the rim.

It keeps what defines each method: it learns from complete (healthy) skulls only, never a defect, and every method
gets the same model in the same stage. The settings (2-degree chart, all modes, 4 mm noise; in the stage, the fit
within 25 degrees of the hole and a share of 0.75 against the harmonic fill) were chosen on the radius errors of the
training skulls' own defects with leave-one-out models and checked on the validation defects (``docs/ablation.md``,
"The shape model fitted near the hole, with all its modes").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["ShapeModel", "ShapeModelError", "skull_radii", "build_shape_model"]

MODEL_FORMAT = "skullrecon-shape-model/1"


class ShapeModelError(ValueError):
    """A shape model file that cannot be used (one line, naming the file)."""


@dataclass(frozen=True)
class ShapeModel:
    """Args:
    step_deg: the model's chart step (a fixed chart, axis 0 the pole, as :func:`surfaces.chart_directions`).
    mean: (2, theta, phi) mean outer and inner radius (mm); 0 where not ``valid``.
    modes: (k, 2, theta, phi) principal modes (unit vectors over the valid directions of both charts).
    variance: (k,) each mode's variance among the skulls (mm^2).
    valid: (theta, phi) directions where every skull of the model has bone.
    skulls: the files it was built from (names only).
    noise_mm: the rays' noise the fit assumes.
    """

    step_deg: float
    mean: np.ndarray
    modes: np.ndarray
    variance: np.ndarray
    valid: np.ndarray
    skulls: tuple[str, ...]
    noise_mm: float = 4.0

    def save(self, path: str | Path) -> None:
        """Written beside ``path`` and renamed onto it: a killed run leaves no file that looks complete."""
        from skullrecon.io import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a handle: savez would add .npz to a bare name
            np.savez_compressed(fh, format=MODEL_FORMAT, step_deg=self.step_deg, mean=self.mean.astype(np.float32),
                                modes=self.modes.astype(np.float32), variance=self.variance, valid=self.valid,
                                skulls=np.array(self.skulls), noise_mm=self.noise_mm)

    @classmethod
    def load(cls, path: str | Path) -> ShapeModel:
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["format"]) != MODEL_FORMAT:
                    raise ShapeModelError(f"{path}: not a {MODEL_FORMAT} file (format {str(f['format'])!r})")
                model = cls(float(f["step_deg"]), f["mean"], f["modes"], f["variance"], f["valid"].astype(bool),
                            tuple(str(s) for s in f["skulls"]), float(f["noise_mm"]))
        except ShapeModelError:
            raise
        except (OSError, KeyError, ValueError) as e:
            raise ShapeModelError(f"{path}: not a readable shape model ({e})") from None
        if model.mean.shape != (2,) + model.valid.shape or model.modes.shape[1:] != model.mean.shape:
            raise ShapeModelError(f"{path}: shape model arrays do not match ({model.mean.shape}, {model.modes.shape})")
        return model

    def _at(self, chart: np.ndarray, units: np.ndarray) -> np.ndarray:
        """A chart of the model (..., theta, phi) at directions ``units`` (..., 3): bilinear, phi wrapping."""
        from skullrecon.surfaces import to_chart

        _, t, p = to_chart(units, self.step_deg)
        t = np.clip(t, 0, self.valid.shape[0] - 1)
        lead = chart.shape[:-2]
        flat = chart.reshape((-1,) + chart.shape[-2:])
        out = [ndimage.map_coordinates(c, [t, p], order=1, mode="grid-wrap") for c in flat]
        return np.stack(out).reshape(lead + t.shape)

    def fit(self, units: np.ndarray, radii: np.ndarray, known: np.ndarray) -> np.ndarray:
        """The model's coefficients (modes, then the centre's shift in mm) fitted to outer and inner ``radii``
        (2, ...) at directions ``units`` (..., 3) where ``known``."""
        use = known & (self._at(self.valid.astype(np.float32), units) > 0.999) & np.isfinite(radii).all(0)
        basis = self._basis(units[use])  # (terms, 2, n)
        a = basis[1:].reshape(len(basis) - 1, -1).T
        y = (radii[:, use] - basis[0]).ravel()
        prior = np.zeros(a.shape[1])
        prior[:len(self.variance)] = self.noise_mm ** 2 / self.variance
        return np.linalg.solve(a.T @ a + np.diag(prior), a.T @ y)

    def predict(self, units: np.ndarray, coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outer and inner radius (2, ...) at directions ``units`` (..., 3), and where the model holds (...)."""
        basis = self._basis(units)
        return basis[0] + np.tensordot(coefficients, basis[1:], 1), self._at(self.valid.astype(np.float32),
                                                                              units) > 0.999

    def _basis(self, units: np.ndarray) -> np.ndarray:
        """The mean, the modes and the three shift terms at ``units``: (1 + k + 3, 2, ...)."""
        shift = np.moveaxis(units, -1, 0)[:, None].repeat(2, 1)
        return np.concatenate([self._at(self.mean, units)[None], self._at(self.modes, units), shift])


def skull_radii(bone: np.ndarray, spacing: Sequence[float], step_deg: float) -> np.ndarray:
    """Outer and inner radius (2, theta, phi; NaN without bone) of a skull on the fixed chart, from the middle of its
    bone's box (as the surface stage casts them)."""
    from skullrecon.surfaces import SurfaceConfig, cast_radii, chart_directions, ray_origin

    spacing = np.asarray(spacing, float)
    centre, r_max = ray_origin(bone, spacing, SurfaceConfig.pad_mm)
    return np.stack(cast_radii(bone, spacing, centre, chart_directions(step_deg), r_max))


def build_shape_model(complete_skulls: Sequence[str | Path], step_deg: float = 2.0, n_modes: int | None = None,
                      noise_mm: float = 4.0, log: Callable[[str], None] = print) -> ShapeModel:
    """The model of ``complete_skulls`` (healthy skulls' files): the mean radius charts and the first ``n_modes``
    principal modes (None: all, one fewer than the skulls) over the directions where every skull has bone. The fit's
    prior weighs each mode by its variance, so the small modes cost little to keep."""
    from skullrecon.io import read_volume

    n_modes = len(complete_skulls) - 1 if n_modes is None else n_modes
    if len(complete_skulls) <= max(n_modes, 1):
        raise ValueError(f"a shape model of {n_modes} modes needs more than {max(n_modes, 1)} skulls, "
                         f"got {len(complete_skulls)}")
    charts = []
    for path in complete_skulls:
        volume = read_volume(path)
        charts.append(skull_radii(volume.array > 0, volume.spacing, step_deg))
        log(f"{Path(path).name}: radii charted")
    charts = np.array(charts, np.float64)
    valid = np.isfinite(charts).all((0, 1))
    x = charts[:, :, valid].reshape(len(charts), -1)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)

    def unflat(v: np.ndarray) -> np.ndarray:
        out = np.zeros((2,) + valid.shape, np.float32)
        out[:, valid] = v.reshape(2, -1)
        return out

    return ShapeModel(step_deg, unflat(mean), np.stack([unflat(v) for v in vt[:n_modes]]),
                      s[:n_modes] ** 2 / (len(charts) - 1), valid, tuple(Path(p).name for p in complete_skulls),
                      noise_mm)
