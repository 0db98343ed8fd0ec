"""The box-restricted stages of reconstruction give exactly what the whole-volume rules give.

:func:`to_grid`, :func:`from_grid` and :func:`extract_implant` work only where the skull, the
prediction or the implant can be; here they are compared voxel for voxel with the whole-volume
reference implementations (and, for the implant, with the rule written out from the public
morphology functions) on random volumes and on the shared real skulls, with predictions of a
real reconstruction's extent (the true complete skull of a SkullFix triplet; the SkullBreak skull
with its defect filled by the mirror image of the other side, bench/reconstruct.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import real_file
from skullrecon import postprocess
from skullrecon.io import read_volume
from skullrecon.postprocess import PostprocessConfig, closing, extract_implant, largest_component, opening
from skullrecon.preprocess import (Geometry, from_grid, plan_crop, preprocess_volume, reference_from_grid,
                                   reference_to_grid, to_grid)

REPO = Path(__file__).resolve().parents[1]


def _rule(prediction, defective, spacing, task, cfg):
    """The implant rule on the whole volume, written out (independent of extract_implant's code)."""
    d = defective.astype(bool)
    pred = prediction.astype(bool)
    if task == "reconstruct":
        pred = closing(pred | d, cfg.closing_mm, spacing)
    implant = pred & ~d
    if cfg.opening_mm > 0:
        implant = opening(implant, cfg.opening_mm, spacing)
    return largest_component(implant).astype(np.uint8)


def test_grid_round_trip_equals_the_whole_box_reference_on_random_volumes():
    rng = np.random.default_rng(1)
    for trial in range(30):
        shape = tuple(int(n) for n in rng.integers(6, 50, 3))
        grid = int(rng.choice([8, 12, 16, 24, 32, 40]))
        vol = np.zeros(shape, np.uint8)
        lo = [int(rng.integers(0, n // 2)) for n in shape]
        hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, shape)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        vol[box] = rng.random(tuple(b - a for a, b in zip(lo, hi))) < 0.5
        if not vol.any():
            continue
        geom = plan_crop(vol, rng.uniform(0.3, 3, 3), grid, float(rng.uniform(0, 0.5)))  # box < or > grid
        np.testing.assert_array_equal(to_grid(vol, geom), reference_to_grid(vol, geom))
        np.testing.assert_array_equal(to_grid(np.asfortranarray(vol), geom), reference_to_grid(vol, geom))
        prob = (rng.random((grid,) * 3) * (rng.random((grid,) * 3) < 0.3)).astype(np.float32)
        if trial % 3 == 0:
            prob = (prob > 0.1).astype(np.float32) * 0.5  # values exactly at the threshold
        threshold = [0.5, None, 0.25][trial % 3]
        np.testing.assert_array_equal(from_grid(prob, geom, threshold), reference_from_grid(prob, geom, threshold))
        region = tuple(slice(int(rng.integers(0, n // 2)), int(rng.integers(n // 2 + 1, n + 1))) for n in shape)
        part = from_grid(prob, geom, threshold, region=region, order="F")
        assert part.flags.f_contiguous
        np.testing.assert_array_equal(part[region], reference_from_grid(prob, geom, threshold)[region])
        assert np.count_nonzero(part) == np.count_nonzero(part[region])
        # a network's output left on its device (here the CPU): the same voxels as the host array's
        on_device = from_grid(torch.from_numpy(prob), geom, threshold, region=region, order="F")
        assert on_device.dtype == part.dtype and on_device.flags.f_contiguous
        np.testing.assert_array_equal(on_device, part)


def test_reconstruction_thresholded_on_the_device_equals_the_host_path():
    """reconstruct_file's network output stays on its device and comes back as uint8; the old path copied the
    float probabilities to the host and thresholded there. A seeded untrained network, a synthetic skull."""
    from conftest import shell
    from skullrecon.infer import predict, probabilities
    from skullrecon.models import build_network

    torch.manual_seed(0)
    net = build_network("unet", {"channels": [4, 8], "strides": [2], "num_res_units": 0}, 32).eval()
    skull = shell((50, 46, 40), radii=(22, 20, 17)).astype(np.uint8)
    grid_input, geom = preprocess_volume(skull, (1.5, 1.5, 2.0), 32, 0.1)
    cpu = torch.device("cpu")
    prob = predict(net, grid_input, cpu)
    threshold = float(np.median(prob))  # an untrained network's output is near 0.5: split it in two
    old = from_grid(prob, geom, threshold, order="F")
    new = from_grid(probabilities(net, grid_input, cpu), geom, threshold, order="F")
    assert 0 < new.sum() < new.size and new.dtype == np.uint8
    np.testing.assert_array_equal(new, old)


def _skullbreak_case():
    sys.path.insert(0, str(REPO / "bench"))
    from reconstruct import plausible_prediction

    vol = read_volume(real_file("real/autoimplantpipe_skullbreak_parietotemporal_001.nii.gz"))
    grid_input, geom = preprocess_volume(vol.array, vol.spacing, 256, 0.1)
    return vol, geom, grid_input, plausible_prediction(grid_input)


def test_real_skullbreak_skull_every_stage_equals_the_reference():
    vol, geom, grid_input, prob = _skullbreak_case()
    np.testing.assert_array_equal(grid_input, (reference_to_grid(vol.array, geom) >= 0.5).astype(np.uint8))
    prediction = from_grid(prob, geom, 0.5, order="F")
    np.testing.assert_array_equal(prediction, reference_from_grid(prob, geom, 0.5))
    cfg = PostprocessConfig()
    implant = extract_implant(prediction, vol.array, vol.spacing, "reconstruct", cfg)
    expected = _rule(prediction, vol.array, vol.spacing, "reconstruct", cfg)
    # a real implant: hundreds of thousands of voxels, on one side of the skull
    assert 1e5 < expected.sum() < 2e6
    np.testing.assert_array_equal(implant, expected)


def test_real_skullfix_triplet_with_the_true_skull_as_prediction():
    path = "real/aimaster_training_set_{}_000.nrrd"
    defective = read_volume(real_file(path.format("defective_skull")))
    complete = read_volume(real_file(path.format("complete_skull")))
    geom = plan_crop(defective.array, defective.spacing, 128, 0.1)
    prob = to_grid(complete.array, geom)  # the complete skull as a network would see it, then back
    prediction = from_grid(prob, geom, 0.5, order="F")
    np.testing.assert_array_equal(prediction, reference_from_grid(prob, geom, 0.5))
    for task in ("reconstruct", "implant"):
        cfg = PostprocessConfig()
        pred = prediction if task == "reconstruct" else (prediction.astype(bool) & ~defective.array.astype(bool))
        implant = extract_implant(pred, defective.array, defective.spacing, task, cfg)
        np.testing.assert_array_equal(implant, _rule(pred, defective.array, defective.spacing, task, cfg))
        assert implant.sum() > 1e5


def test_extraction_box_grows_until_the_implant_is_inside(monkeypatch):
    """A box that cuts the implant is widened (here from a box 4 voxels wide inside the implant)."""
    from conftest import shell

    skull = shell((72, 72, 72), radii=(30, 28, 26), thickness=4.0)
    hole = np.zeros_like(skull)
    hole[:, :, 52:] = True
    defective = skull & ~hole
    spacing = (1.0, 1.0, 1.25)
    implant_true = skull & hole
    centre = [int(np.mean(a)) for a in np.nonzero(implant_true)]
    calls = []

    def tiny_box(prediction, defective):
        calls.append(1)
        return tuple(slice(c - 2, c + 2) for c in centre)

    monkeypatch.setattr(postprocess, "locate_implant", tiny_box)
    for task, pred in (("reconstruct", skull), ("implant", implant_true)):
        cfg = PostprocessConfig(closing_mm=2.0, opening_mm=1.0)
        out = extract_implant(pred.astype(np.uint8), defective.astype(np.uint8), spacing, task, cfg)
        np.testing.assert_array_equal(out, _rule(pred, defective, spacing, task, cfg))
        assert out.sum() > 1000
    assert len(calls) == 2
