"""The second stage (skullrecon.refine): its geometry, its simulated first stage, its training data and its
inference on the original grid. No assertion on what a network trained here reaches (CPUs round differently):
the stub networks below are exact, and the one training only has to write a model the product can load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from conftest import shell
from skullrecon.masking import MaskConfig
from skullrecon.models import load_model, validate_spec
from skullrecon.preprocess import from_grid, preprocess_volume, save_case, to_grid
from skullrecon.refine import (RefineConfig, RefineDataset, SimulationConfig, fill_box, network_spec,
                               refine_prediction, simulate_first_stage, upsample_window)

MASKS = MaskConfig(n_patches=(1, 1), patch_size_mm=(20.0, 30.0), centre_min_height=0.4)


def test_upsampling_a_window_equals_upsampling_the_grid_and_cutting():
    coarse = np.random.default_rng(0).random((12, 10, 14)).astype(np.float32)
    whole = F.interpolate(torch.from_numpy(coarse)[None, None], scale_factor=4, mode="trilinear",
                          align_corners=False)[0, 0].numpy()
    for window in [(slice(0, 4), slice(2, 10), slice(6, 14)), (slice(3, 12), slice(0, 10), slice(0, 2))]:
        fine = tuple(slice(s.start * 4, s.stop * 4) for s in window)
        np.testing.assert_allclose(upsample_window(coarse, window, 4), whole[fine], atol=1e-6)


def test_fill_box_surrounds_the_largest_fill_inside_the_grid():
    complete = np.zeros((32, 32, 32), np.float32)
    defective = np.zeros((32, 32, 32), np.uint8)
    complete[20:26, 10:18, 12:14] = 0.9  # the fill
    complete[2, 2, 2] = 0.9  # a speck of noise elsewhere
    defective[20:26, 18:30, 12:14] = 1  # bone given: not fill
    complete[20:26, 18:30, 12:14] = 1.0
    window = fill_box(complete, defective, margin=3, multiple=8)
    for s, (lo, hi) in zip(window, [(20, 26), (10, 18), (12, 14)]):
        assert s.start <= lo - 3 or s.start == 0
        assert s.stop >= min(hi + 3, 32)
        assert 0 <= s.start < s.stop <= 32 and (s.stop - s.start) % 8 == 0
    assert fill_box(np.zeros_like(complete), defective, 3, 8) is None


def test_simulated_first_stage_changes_only_where_bone_was_removed():
    skull = shell((48, 48, 48), (20, 18, 16), 3.0).astype(np.float32)
    removed = np.zeros(skull.shape, bool)
    removed[:, :, 36:] = skull[:, :, 36:] > 0
    a = simulate_first_stage(skull, removed, 3.0, SimulationConfig(), np.random.default_rng(1))
    b = simulate_first_stage(skull, removed, 3.0, SimulationConfig(), np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)  # the same draw, the same output
    assert a.min() >= 0 and a.max() <= 1
    far = np.zeros(skull.shape, bool)
    far[:, :, :28] = True  # more than the blend's reach from the removed bone
    np.testing.assert_allclose(a[far], skull[far], atol=1e-6)
    assert np.abs(a - skull)[removed].mean() > 0.01


def _fine_skulls(tmp_path, n=3, grid=64):
    files = []
    for i in range(n):
        skull = shell((80, 80, 72), (34 - i, 32, 28), 3.0)
        fine, geom = preprocess_volume(skull, (2.0, 2.0, 2.0), grid, 0.1)
        files.append(tmp_path / f"{i:03d}.npz")
        save_case(files[-1], geom, complete=fine)
    return files


def test_training_windows_are_healthy_skulls_with_a_cut_and_a_first_stage(tmp_path):
    files = _fine_skulls(tmp_path)
    cfg = RefineConfig(grid=64, coarse_grid=32, crop=32, samples_per_skull=2)
    ds = RefineDataset(files, cfg, MASKS, seed=0)
    assert len(ds) == 6
    x, y = ds[0, 1]
    assert x.shape == (2, 32, 32, 32) and y.shape == (1, 32, 32, 32)
    given, target = x[0] > 0.5, y[0] > 0
    assert not (given & ~target).any()  # the defective skull is the healthy one less a cut
    assert (target & ~given).sum() > 0  # the window holds removed bone
    assert 0 <= float(x[1].min()) and float(x[1].max()) <= 1
    x2, y2 = RefineDataset(files, cfg, MASKS, seed=0)[0, 1]
    assert torch.equal(x, x2) and torch.equal(y, y2)  # draws depend on (seed, epoch, index) only
    assert not torch.equal(ds[1, 1][0], x)  # another epoch, another mask


def test_a_training_defect_takes_all_the_bone_it_spans(tmp_path, monkeypatch):
    """As a real defect does: no trace of the skull's surfaces is left inside it (coarse voxels that are mostly
    air at the skull's surfaces once kept their fine bone, a hint of the true shape no real defect gives)."""
    import skullrecon.refine as refine

    files = _fine_skulls(tmp_path, n=1)
    patch = np.zeros((32, 32, 32), bool)
    patch[8:24, 8:24, 20:] = True  # a box through the top of the shell
    monkeypatch.setattr(refine, "make_mask", lambda skull, spacing, cfg, rng: patch.copy())
    cfg = RefineConfig(grid=64, coarse_grid=32, crop=64, samples_per_skull=1)  # the window is the whole grid
    x, y = RefineDataset(files, cfg, MASKS, seed=0)[0, 0]
    fine = np.ones((2, 2, 2), bool)  # the patch at the fine grid (its edges are smoothed, so within a voxel)
    inside, near = np.kron(ndimage.binary_erosion(patch), fine), np.kron(ndimage.binary_dilation(patch), fine)
    given, target = x[0].numpy() > 0.5, y[0].numpy() > 0
    assert target[inside].sum() > 100  # the patch spans bone
    assert not given[inside].any()
    assert np.array_equal(given[~near], target[~near])  # and nothing outside it is cut


class _CopyFirstStage(nn.Module):
    """A stand-in second stage: bone wherever the first stage's probability reaches 0.5 (or everywhere)."""

    def __init__(self, everywhere: bool = False):
        super().__init__()
        self.everywhere = everywhere

    def forward(self, x):
        if self.everywhere:
            return torch.full_like(x[:, 1:], 20.0)
        return (x[:, 1:] - 0.5) * 40


def _case():
    skull = shell((80, 80, 72), (34, 32, 28), 3.0)
    defective = skull.copy()
    defective[:, :, 56:] = 0
    return skull.astype(np.uint8), defective.astype(np.uint8)


def _spec(grid=64, coarse=32):
    return network_spec(RefineConfig(grid=grid, coarse_grid=coarse, crop=32, roi_margin_mm=6.0),
                        {"channels": [4, 8], "strides": [2]}, 0.1)


def test_a_second_stage_that_copies_the_first_changes_little_and_only_near_the_fill():
    skull, defective = _case()
    spacing = (2.0, 2.0, 2.0)
    grid_input, geom = preprocess_volume(defective, spacing, 32, 0.1)
    first = to_grid(skull, geom)  # a perfect first stage's probabilities
    single = from_grid(first, geom, 0.5)
    dev = torch.device("cpu")
    copied = refine_prediction(defective, first, grid_input, geom, "reconstruct", _CopyFirstStage(), _spec(), dev)
    assert copied.shape == skull.shape and copied.dtype == np.uint8
    assert (copied != single).mean() < 0.01
    filled = refine_prediction(defective, first, grid_input, geom, "reconstruct", _CopyFirstStage(True), _spec(), dev)
    changed = np.nonzero(filled != single)
    assert len(changed[2]) and changed[2].min() > 56 - 2 * 6 / 2.0 - 8  # only around the defect (the top)
    nothing = np.zeros_like(first)
    np.testing.assert_array_equal(
        refine_prediction(defective, nothing, grid_input, geom, "reconstruct", _CopyFirstStage(True), _spec(), dev),
        from_grid(nothing, geom, 0.5))  # no fill: the first stage's output as it is
    with pytest.raises(ValueError, match="refines a 16\\^3 first stage"):
        refine_prediction(defective, first, grid_input, geom, "reconstruct", _CopyFirstStage(), _spec(32, 16), dev)


def test_a_refiner_spec_takes_two_channels_and_no_other_model_does():
    spec = {**_spec(), "postprocess": {}}
    validate_spec(spec, need_postprocess=False)
    with pytest.raises(ValueError, match="in_channels"):
        validate_spec({**spec, "task": "reconstruct"}, need_postprocess=False)


def test_one_epoch_writes_a_refiner_that_reconstruct_and_evaluate_load(tmp_path):
    from skullrecon.refine import train_refiner
    from skullrecon.train import TrainConfig

    files = _fine_skulls(tmp_path)
    cfg = RefineConfig(grid=64, coarse_grid=32, crop=32, samples_per_skull=1)
    out = tmp_path / "refiner.pt"
    train_refiner(files, out, cfg, MASKS, {"channels": [4, 8], "strides": [2], "num_res_units": 1},
                  TrainConfig(epochs=1, batch_size=2, lr=1e-3, val_fraction=0.34, bf16=False), 0.1,
                  tmp_path / "ckpt", tmp_path / "history.csv", device="cpu", log=lambda s: None)
    net, spec = load_model(out)
    assert spec["task"] == "refine" and spec["network"]["in_channels"] == 2 and spec["grid"] == 64
    assert spec["refine"]["coarse_grid"] == 32 and spec["masking"]["deform"]
    skull, defective = _case()
    grid_input, geom = preprocess_volume(defective, (2.0,) * 3, 32, 0.1)
    refined = refine_prediction(defective, to_grid(skull, geom), grid_input, geom, "implant", net, spec,
                                torch.device("cpu"))
    assert refined.shape == skull.shape


def test_a_ramped_displacement_leaves_bone_at_the_rim_in_place():
    skull = shell((48, 48, 48), (20, 18, 16), 3.0).astype(np.float32)
    removed = np.zeros(skull.shape, bool)
    removed[:, :, 36:] = skull[:, :, 36:] > 0
    plain = SimulationConfig(shift_mm=9.0, blur_voxels=(0.0, 0.0), contrast=(1.0, 1.0), bias=0.0)
    moved = simulate_first_stage(skull, removed, 3.0, plain, np.random.default_rng(2))
    assert np.abs(moved - skull)[removed].mean() > 0.05  # displaced where bone was removed
    ramped = SimulationConfig(**{**plain.__dict__, "ramp_mm": 1e4})  # the ramp never reaches its whole
    kept = simulate_first_stage(skull, removed, 3.0, ramped, np.random.default_rng(2))
    np.testing.assert_allclose(kept, skull, atol=0.02)
