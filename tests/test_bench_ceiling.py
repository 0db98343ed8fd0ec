"""bench/ceiling.py, the resolution ceiling of a perfect MAE and a perfect baseline, on a synthetic triplet.

What it must show, on any skull: a perfect baseline is near 1 at a fine grid; a perfect MAE through the
paper's closing alone keeps the upsampling slivers all over the skull (far lower DSC, HD95 far from the
defect), which opening + largest component reduce.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from skullrecon.synthetic import generate_dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def test_ceiling_of_perfect_networks_on_a_synthetic_skull(tmp_path):
    from ceiling import ceiling

    generate_dataset(tmp_path / "sf", "skullfix", n_train=1, n_test=0, shape=(96, 96, 72), spacing=(2.0, 2.0, 2.8),
                     seed=3)
    rows = pd.DataFrame(ceiling(tmp_path / "sf" / "training_set", "000", 48)).set_index(["method", "postprocess"])
    baseline = rows.loc[("perfect baseline", "paper")]
    mae_paper, mae_lc = rows.loc[("perfect MAE", "paper")], rows.loc[("perfect MAE", "+open 1.6 +LC")]
    assert baseline["dsc"] > 0.8
    assert mae_lc["dsc"] > mae_paper["dsc"] + 0.1
    assert mae_paper["hd95"] > 10 * baseline["hd95"]  # stray bone far from the defect


def test_a_second_stage_cube_lifts_the_ceiling_of_a_coarse_grid(tmp_path):
    """Issue 37's design: a perfect second stage on a cube around what a perfect first stage fills, at the cube's
    own finer grid, scores above the coarse grid alone; outside the cube the first stage's output is kept."""
    from ceiling import ceiling

    generate_dataset(tmp_path / "sf", "skullfix", n_train=1, n_test=0, shape=(96, 96, 72), spacing=(2.0, 2.0, 2.8),
                     seed=3)
    data = tmp_path / "sf" / "training_set"
    rows = pd.DataFrame(ceiling(data, "000", 16, boxes=[48], box_margin=0.5)).set_index(["method", "postprocess"])
    coarse, refined = rows[rows["grid"] == 16], rows[rows["grid"] != 16]
    assert set(refined["grid"]) == {"16+box48"}
    for method in ("perfect baseline", "perfect MAE"):
        key = (method, "+open 1.6 +LC")
        assert refined.loc[key, "dsc"] > coarse.loc[key, "dsc"] + 0.05, (method, refined.loc[key], coarse.loc[key])
    side_mm = 96 * 2.0  # the skull's largest extent is below the volume's; the cube's voxels are finer than 16's
    assert refined["box_voxel_mm"].max() < side_mm / 16
