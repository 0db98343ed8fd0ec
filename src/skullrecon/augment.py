"""Optional augmentation of the healthy skull before masking (beyond the paper, its future work).

Random flips, a small affine (rotation and scaling) and a coarse elastic warp, all applied in one
``grid_sample`` on the skull's grid. Off in the paper configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from skullrecon.settings import from_mapping

__all__ = ["AugmentConfig", "augment_skull"]


@dataclass
class AugmentConfig:
    """Args:
    flip_axes: array axes that may be mirrored (each with probability 0.5); axis 0 is
        left-right in both datasets, the one plane of symmetry of a skull.
    rotate_deg: maximum rotation about each axis, degrees.
    scale: maximum relative scaling (0.05 = +-5 %).
    elastic: maximum elastic displacement as a fraction of the grid (0 disables it).
    elastic_control_points: coarse displacement grid per axis.
    """

    flip_axes: tuple[int, ...] = (0,)
    rotate_deg: float = 8.0
    scale: float = 0.05
    elastic: float = 0.02
    elastic_control_points: int = 5

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentConfig:
        return from_mapping(cls, d, "augmentation", tuples=("flip_axes",))


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def augment_skull(skull: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A randomly flipped, rotated, scaled and warped copy of a binary skull (bool)."""
    out = skull
    for axis in cfg.flip_axes:
        if rng.random() < 0.5:
            out = np.flip(out, axis)
    angles = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg, 3))
    matrix = _rotation(angles) * rng.uniform(1 - cfg.scale, 1 + cfg.scale)
    theta = torch.zeros(1, 3, 4)
    theta[0, :, :3] = torch.from_numpy(matrix).float()
    shape = out.shape
    grid = F.affine_grid(theta, [1, 1, *shape], align_corners=False)
    if cfg.elastic > 0:
        n = cfg.elastic_control_points
        coarse = torch.from_numpy(rng.uniform(-cfg.elastic, cfg.elastic, (1, 3, n, n, n))).float() * 2
        grid = grid + F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True).permute(0, 2, 3, 4, 1)
    src = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))[None, None]
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped[0, 0].numpy() >= 0.5
