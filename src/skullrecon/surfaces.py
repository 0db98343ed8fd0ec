"""A second stage with no network: the skull's own surfaces continued over the hole, at the scan's resolution.

The first stage's shape limits every method (``docs/ablation.md``): its implant lies a few millimetres inside or
outside the true bone away from the rim. The bone around the hole knows better where the missing bone lies. Rays from
the middle of the skull's box find, per direction, the radius of the outer and of the inner surface of the outermost
bone; the directions with no bone form holes in that map, and the hole the first stage fills most is the defect. Both
radii are continued over the hole by the harmonic fill (the Laplace equation with the surrounding radii as its
boundary: no overshoot, which a spline's carrying of the rim's steep cut edges into the hole has). The radii the first
stage's own skull has there are averaged in (``weight``), so each method's shape still counts. The implant is the
shell between the two surfaces, the defective skull's bone taken out, and then :data:`SHELL_RULE`. With a shape model
of healthy skulls (``shape_model``, :mod:`skullrecon.shape_model`) the harmonic fill is averaged with the model's, which
brings back the bulge a harmonic fill cannot have inside a hole (the released stage's).

It keeps what defines each method: no defect is seen, by the MAE's side or any other (the shape model learns from
healthy skulls only), and every method gets the same stage (a baseline's implant plus its input's bone is its
skull). Settings chosen on the trainers' 4 validation skulls (``docs/ablation.md``, ``bench/surface.py``).

The chart: directions on a (theta, phi) grid turned so that the first stage's implant lies on its equator at phi 180,
where the chart is nearly isometric (the pole is axis 0, left-right, made square to the defect's direction); phi wraps.
A chart with a fixed pole put a temporal defect on the pole, where the fill's 5-point Laplacian is far from the
surface's (radius errors of 1.7-3.6 mm against 0.2-1.5 over most others, on defects cut into the validation skulls).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve

from skullrecon.postprocess import PostprocessConfig, extract_implant
from skullrecon.settings import from_mapping
from skullrecon.shape_model import ShapeModel

__all__ = ["SHELL_RULE", "SurfaceConfig", "chart_frame", "chart_directions", "to_chart", "cast_radii",
           "hole_directions", "continue_over", "continue_surfaces", "surface_implant", "surface_cases"]


#: How the shell becomes an implant, for every method alike: the reconstruction rule (the shell plus the bone,
#: closed onto the defect's edge, the bone taken out, opened, the largest component) with the radii the settings
#: were chosen with (closing 2 mm, opening 1 mm; not a run's own post-processing, which differs per run).
SHELL_RULE = PostprocessConfig(closing_mm=2.0, opening_mm=1.0, largest_component=True)


@dataclass
class SurfaceConfig:
    """Args:
    margin_deg: directions within this many degrees of the hole are not trusted (the defect's cut edges) and are
        continued too.
    weight: the continued surfaces' weight against the first stage's own surfaces (1: the first stage only picks
        the hole; 0: its shape alone).
    step_deg: the chart's angular step.
    ray_step_mm: the sampling step along a ray.
    gap_mm: gaps in the bone along a ray shorter than this (the diploe's holes) do not split the bone.
    pad_mm: how far beyond the first stage's implant the shell may reach.
    cone_extra_deg: rays are cast within this many degrees beyond the first stage's implant's directions (the
        whole sphere where the hole or its fill reaches further); a matter of speed only.
    shape_model: a :class:`~skullrecon.shape_model.ShapeModel` file of healthy skulls: its fit, with the rim's
        misfit continued, is averaged with the harmonic fill. None: the harmonic fill alone.
    model_share: the shape model's share in that average (the harmonic fill has the rest).
    model_ring_deg: the model is fitted to the skull's radii within this many degrees of the hole (the continued
        region), not further: near the hole the skull's own shape says most.
    """

    margin_deg: int = 4
    weight: float = 0.5
    step_deg: float = 1.0
    ray_step_mm: float = 0.2
    gap_mm: float = 2.0
    pad_mm: float = 15.0
    cone_extra_deg: float = 15.0
    shape_model: str | Path | None = None
    model_share: float = 0.75
    model_ring_deg: int = 25

    def __post_init__(self) -> None:
        for name in ("weight", "model_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"surface {name} must lie in [0, 1], got {getattr(self, name)!r}")
        for name in ("step_deg", "ray_step_mm", "gap_mm", "pad_mm", "cone_extra_deg"):
            if not getattr(self, name) > 0:
                raise ValueError(f"surface {name} must be > 0, got {getattr(self, name)!r}")
        if self.shape_model is not None and not isinstance(self.shape_model, (str, Path)):
            raise ValueError(f"surface shape_model must be a shape model file or None, got {self.shape_model!r}")
        for name, least in (("margin_deg", 0), ("model_ring_deg", 1)):
            value = getattr(self, name)
            if int(value) != value or value < least:
                raise ValueError(f"surface {name} must be a whole number of degrees >= {least}, got {value!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SurfaceConfig:
        return from_mapping(cls, d, "surface stage")


def chart_frame(towards: np.ndarray | None = None) -> np.ndarray:
    """The chart's axes (rows: pole, phi 0, phi 90) so that direction ``towards`` lies at theta 90, phi 180: the pole
    is axis 0 made square to it (axis 1 where ``towards`` lies within 26 degrees of axis 0). None (or no direction):
    axis 0 the pole."""
    if towards is None or not np.linalg.norm(towards) > 1e-9:
        return np.eye(3)
    m = np.asarray(towards, float) / np.linalg.norm(towards)
    axis = np.eye(3)[0] if abs(m[0]) < 0.9 else np.eye(3)[1]
    pole = axis - (axis @ m) * m
    pole /= np.linalg.norm(pole)
    return np.stack([pole, -m, np.cross(pole, -m)])


def chart_directions(step: float, frame: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors (theta, phi, 3) at the chart's grid points, in the axes of ``frame`` (:func:`chart_frame`)."""
    theta = np.radians(np.arange(step / 2, 180, step))
    phi = np.radians(np.arange(0, 360, step))
    t, p = np.meshgrid(theta, phi, indexing="ij")
    local = np.stack([np.cos(t), np.sin(t) * np.cos(p), np.sin(t) * np.sin(p)], -1)
    return local if frame is None else local @ frame


def to_chart(vectors: np.ndarray, step: float,
             frame: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Length and chart coordinates (fractional theta and phi indices) of vectors from the centre."""
    if frame is not None:
        vectors = vectors @ frame.T
    r = np.linalg.norm(vectors, axis=-1)
    theta = np.degrees(np.arccos(np.clip(vectors[..., 0] / np.maximum(r, 1e-9), -1, 1)))
    phi = np.degrees(np.arctan2(vectors[..., 2], vectors[..., 1])) % 360
    return r, theta / step - 0.5, phi / step


def ray_origin(bone: np.ndarray, spacing: np.ndarray, pad_mm: float) -> tuple[np.ndarray, float]:
    """Where the rays start (mm: the middle of the bone's box) and how far they reach (half the box's diagonal and
    ``pad_mm``): the one convention of the stage and of the shape model's skulls."""
    from skullrecon.preprocess import bounding_box  # here: that module imports torch, which nothing else here needs

    lo, stop = bounding_box(bone)
    hi = stop - 1  # the last bone voxel
    return (lo + hi) / 2 * spacing, float(np.linalg.norm((hi - lo) * spacing) / 2 + pad_mm)


def cast_radii(bone: np.ndarray, spacing: np.ndarray, centre: np.ndarray, units: np.ndarray, r_max: float,
               dr: float = 0.2, gap_mm: float = 2.0, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Outer and inner radius (mm) of the outermost bone along each ray from ``centre`` (NaN where a ray meets no
    bone), each sample the nearest voxel's; gaps shorter than ``gap_mm`` do not split the bone."""
    radii = np.arange(0, r_max, dr, dtype=np.float32)
    index = np.arange(len(radii))
    gap = np.ones((1, max(1, int(round(gap_mm / dr))) + 1), bool)
    steps = (units.reshape(-1, 3) / np.asarray(spacing)).astype(np.float32)  # voxels per mm along each ray
    origin = (np.asarray(centre) / np.asarray(spacing)).astype(np.float32)
    top = np.array(bone.shape, np.int32) - 1
    outer = np.full(len(steps), np.nan, np.float32)
    inner = np.full(len(steps), np.nan, np.float32)
    for s in range(0, len(steps), chunk):
        at = np.rint(origin + steps[s:s + chunk, None, :] * radii[None, :, None]).astype(np.int32)
        within = ((at >= 0) & (at <= top)).all(-1)
        np.clip(at, 0, top, out=at)
        hit = bone[at[..., 0], at[..., 1], at[..., 2]] & within
        met = hit.any(1)
        last = len(radii) - 1 - np.argmax(hit[:, ::-1], 1)
        closed = ndimage.binary_closing(hit, structure=gap)
        first = np.where(~closed & (index < last[:, None]), index, -1).max(1) + 1
        outer[s:s + chunk][met] = radii[last[met]]
        inner[s:s + chunk][met] = radii[first[met]]
    return outer.reshape(units.shape[:-1]), inner.reshape(units.shape[:-1])


def _wrapped(mask: np.ndarray, op, **kwargs) -> np.ndarray:
    """A morphological ``op`` on the chart with phi wrapping (three copies side by side)."""
    n = mask.shape[1]
    out = op(np.concatenate([mask] * 3, 1), **kwargs)
    return out[:, n:2 * n]


def _label_wrapped(mask: np.ndarray) -> np.ndarray:
    """Connected regions of the chart (4-connected) with phi wrapping: a region across phi = 0 is one label."""
    labels, n = ndimage.label(mask)
    seam = (labels[:, 0] > 0) & (labels[:, -1] > 0)
    if not seam.any():
        return labels
    pairs = sparse.coo_matrix((np.ones(int(seam.sum())), (labels[seam, 0], labels[seam, -1])), shape=(n + 1, n + 1))
    _, merged = connected_components(pairs, directed=False)  # the regions the seam joins share a component
    return np.where(labels > 0, merged[labels] + 1, 0)  # background 0, each joined region one label above it


def hole_directions(covered: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """The region of directions with no bone that holds most of ``votes`` (the first stage's implant); all False if
    the votes fall on bone only."""
    labels = _label_wrapped(~covered)
    counts = np.bincount(labels.ravel(), weights=votes.ravel())
    counts[0] = 0
    if not counts.any():
        return np.zeros_like(covered)
    return labels == int(np.argmax(counts))


def _chart_laplacian(shape: tuple[int, int]) -> sparse.csr_matrix:
    """The 5-point graph Laplacian of the chart, phi wrapping, theta not."""
    index = np.arange(shape[0] * shape[1]).reshape(shape)
    pairs = [(index[:-1].ravel(), index[1:].ravel()), (index.ravel(), np.roll(index, -1, 1).ravel())]
    a = np.concatenate([np.concatenate(p) for p in pairs])
    b = np.concatenate([np.concatenate(p[::-1]) for p in pairs])
    adjacency = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(index.size,) * 2).tocsr()
    return adjacency - sparse.diags(np.asarray(adjacency.sum(1)).ravel())


def continue_over(values: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """``values`` on ``unknown`` by the harmonic fill: each unknown value the mean of its chart neighbours, the known
    values held. (A thin-plate spline overshot by up to 10 mm on the validation skulls: it continues the steep rim.)"""
    lap = _chart_laplacian(values.shape)
    u, k = np.nonzero(unknown.ravel())[0], np.nonzero(~unknown.ravel())[0]
    out = values.copy()
    if len(u):
        out.ravel()[u] = spsolve(lap[u][:, u].tocsc(), -(lap[u][:, k] @ values.ravel()[k].astype(np.float64)))
    return out


@lru_cache(maxsize=4)
def load_shape_model(path: str | Path) -> ShapeModel:
    """The shape model file, read once per process (the stage runs case after case)."""
    return ShapeModel.load(path)


def _with_shape_model(model: ShapeModel, harmonic: np.ndarray, observed: np.ndarray, unknown: np.ndarray,
                      units: np.ndarray, frame: np.ndarray, cast: Callable[[np.ndarray], np.ndarray],
                      cfg: SurfaceConfig) -> np.ndarray:
    """The harmonic fill (2, theta, phi: outer and inner) averaged with the shape model's over ``unknown``
    (``cfg.model_share`` the model's): the model fitted to the skull's radii within ``cfg.model_ring_deg`` of the
    hole (on the model's own coarser chart; ``cast`` gives the radii at directions), its misfit at the rim continued
    over the hole by the harmonic fill. Where the model does not hold: the harmonic fill."""
    fit_units = chart_directions(model.step_deg)
    band = _wrapped(unknown, ndimage.binary_dilation, iterations=int(cfg.model_ring_deg))
    _, t, p = to_chart(fit_units, cfg.step_deg, frame)
    at = [np.clip(t, 0, unknown.shape[0] - 1), p]
    near = ndimage.map_coordinates(band.astype(np.float32), at, order=0, mode="grid-wrap") > 0
    in_hole = ndimage.map_coordinates(unknown.astype(np.float32), at, order=0, mode="grid-wrap")[near] > 0
    radii = cast(fit_units[near])
    # the model where the fill needs it only: over the hole and the ring of known directions around it
    ring = _wrapped(unknown, ndimage.binary_dilation, iterations=1)
    predicted, holds = np.zeros((2,) + unknown.shape), np.zeros(unknown.shape, bool)
    predicted[:, ring], holds[ring] = model.predict(units[ring], model.fit(fit_units[near], radii, ~in_hole))
    misfit = np.nan_to_num(np.where(unknown, 0, observed - predicted))
    model_fill = np.stack([predicted[j] + continue_over(misfit[j], unknown) for j in (0, 1)])
    share = cfg.model_share
    return np.where(unknown & holds, share * model_fill + (1 - share) * harmonic, harmonic)


def continue_surfaces(defective: np.ndarray, spacing: Sequence[float], first_implant: np.ndarray,
                      cfg: SurfaceConfig | None = None) -> np.ndarray:
    """The shell between the skull's continued surfaces over the hole the first stage's implant fills, minus the
    defective skull's bone (bool, the scan's grid). Empty if the first stage fills no hole."""
    from skullrecon.preprocess import bounding_box  # here: that module imports torch, which nothing else here needs

    cfg = cfg or SurfaceConfig()
    bone = defective > 0
    shell = np.zeros(bone.shape, bool)
    if not first_implant.any() or not bone.any():
        return shell
    spacing = np.asarray(spacing, float)
    centre, r_max = ray_origin(bone, spacing, cfg.pad_mm)
    first_lo, first_stop = bounding_box(first_implant)
    implant_at = np.argwhere(first_implant[tuple(slice(a, b) for a, b in zip(first_lo, first_stop))]) + first_lo
    towards = implant_at * spacing - centre
    mean = towards.mean(0) / max(np.linalg.norm(towards.mean(0)), 1e-9)
    frame = chart_frame(mean)
    units = chart_directions(cfg.step_deg, frame)
    _, t, p = to_chart(towards, cfg.step_deg, frame)
    votes = np.zeros(units.shape[:2])
    theta_at = np.clip(np.round(t).astype(int), 0, votes.shape[0] - 1)
    np.add.at(votes, (theta_at, np.round(p).astype(int) % votes.shape[1]), 1)
    # rays only within a cone around the first stage's implant (a quarter of the sphere for a SkullFix defect); the
    # whole sphere if the hole or what its fill needs reaches the cone's edge
    spread = np.degrees(np.arccos(np.clip((towards / np.linalg.norm(towards, axis=1, keepdims=True)) @ mean, -1, 1)))
    cone = units @ mean >= np.cos(np.radians(min(180.0, spread.max() + cfg.cone_extra_deg)))
    for rays in (cone, np.ones_like(cone)):
        outer, inner = np.full(cone.shape, np.nan, np.float32), np.full(cone.shape, np.nan, np.float32)
        outer[rays], inner[rays] = cast_radii(bone, spacing, centre, units[rays], r_max, cfg.ray_step_mm, cfg.gap_mm)
        covered = np.isfinite(outer) | ~rays  # outside the rays: unknown, counted as bone for the hole's search
        hole = hole_directions(covered, votes)
        if not hole.any():
            return shell
        region = _wrapped(hole, ndimage.binary_dilation, iterations=cfg.margin_deg) if cfg.margin_deg else hole
        unknown = region | ~covered
        labels = _label_wrapped(unknown)
        touching = np.unique(labels[region])
        unknown = np.isin(labels, touching[touching > 0])  # the parts of the unknown the hole reaches
        if rays.all() or not (_wrapped(unknown, ndimage.binary_dilation, iterations=1) & ~rays).any():
            break
    observed = np.stack([outer, inner])
    outer, inner = continue_over(outer, unknown), continue_over(inner, unknown)
    if cfg.shape_model:
        def cast(at: np.ndarray) -> np.ndarray:
            return np.stack(cast_radii(bone, spacing, centre, at, r_max, cfg.ray_step_mm, cfg.gap_mm))

        outer, inner = _with_shape_model(load_shape_model(cfg.shape_model), np.stack([outer, inner]), observed,
                                         unknown, units, frame, cast, cfg)
    if cfg.weight < 1:  # the first stage's own surfaces, in the region only
        own_outer, own_inner = np.full_like(outer, np.nan), np.full_like(inner, np.nan)
        own_outer[region], own_inner[region] = cast_radii(bone | first_implant, spacing, centre, units[region], r_max,
                                                          cfg.ray_step_mm, cfg.gap_mm)
        has = np.isfinite(own_outer)
        outer[has] = cfg.weight * outer[has] + (1 - cfg.weight) * own_outer[has]
        inner[has] = cfg.weight * inner[has] + (1 - cfg.weight) * own_inner[has]
    # the voxels of a box around the first stage's implant whose direction lies in the region, between the surfaces
    pad = np.ceil(cfg.pad_mm / spacing).astype(int)
    lo = np.maximum(first_lo - pad, 0)
    hi = np.minimum(first_stop + pad, bone.shape)
    axes = [np.arange(a, b, dtype=np.float32) * np.float32(d) - np.float32(c) for a, b, d, c in zip(lo, hi, spacing,
                                                                                                  centre)]
    region_map, outer_map, inner_map = region.astype(np.float32), np.nan_to_num(outer), np.nan_to_num(inner)
    for i, x in enumerate(axes[0]):  # a slab at a time: the box is millions of voxels
        vec = np.stack(np.meshgrid([x], axes[1], axes[2], indexing="ij"), -1)[0]
        r, t, p = to_chart(vec, cfg.step_deg, frame)
        at = np.stack([t, p])
        inside = ndimage.map_coordinates(region_map, at, order=0, mode="grid-wrap") > 0
        r_out = ndimage.map_coordinates(outer_map, at, order=1, mode="grid-wrap")
        r_in = ndimage.map_coordinates(inner_map, at, order=1, mode="grid-wrap")
        shell[lo[0] + i, lo[1]:hi[1], lo[2]:hi[2]] = inside & (r >= r_in) & (r <= r_out)
    return shell & ~bone


def surface_implant(first_implant: np.ndarray, defective: np.ndarray, spacing: Sequence[float],
                    cfg: SurfaceConfig | None = None) -> np.ndarray:
    """The implant (uint8 0/1) after the surface stage: the shell over the hole the first stage's implant fills, made
    an implant by :data:`SHELL_RULE` (the same for every method); the first stage's implant unchanged where it fills
    no hole (the stage has nothing to add there)."""
    shell = continue_surfaces(defective, spacing, first_implant > 0, cfg)
    if not shell.any():
        return (first_implant > 0).astype(np.uint8)
    skull = (shell | (defective > 0)).astype(np.uint8)
    return extract_implant(skull, defective, spacing, "reconstruct", SHELL_RULE)


def surface_cases(implants_dir: str | Path, cases_tsv: str | Path, out_dir: str | Path, cfg: SurfaceConfig,
                  log: Callable[[str], None] = print) -> int:
    """The surface stage on a run's single-stage implants (the ``surface`` rule): each case's implant in
    ``implants_dir`` and its defective skull (``cases_tsv``) in, the implant after the stage out, on the same grid."""
    import pandas as pd

    from skullrecon.io import read_volume, write_volume

    table = pd.read_csv(cases_tsv, sep="\t", dtype=str, keep_default_na=False)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for row in table.itertuples():
        defective = read_volume(row.defective)
        first = read_volume(Path(implants_dir) / f"{row.name}.nrrd").array > 0
        implant = surface_implant(first, defective.array, defective.spacing, cfg)
        write_volume(Path(out_dir) / f"{row.name}.nrrd", implant, like=defective)
        log(f"{row.name}: implant {int(first.sum())} -> {int(implant.sum())} voxels")
    return len(table)
