"""The shape model of healthy skulls (skullrecon.shape_model) on a family of ellipsoidal shells: geometry and linear
algebra only, no network."""

from __future__ import annotations

import numpy as np
import pytest

from skullrecon.io import write_volume
from skullrecon.metrics import dice
from skullrecon.shape_model import ShapeModel, ShapeModelError, build_shape_model, skull_radii
from skullrecon.surfaces import SurfaceConfig, chart_directions, continue_surfaces

SPACING = (1.0, 1.0, 1.2)
THICK = 5.0


def shell(lateral: float, vertical: float, hole_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoidal shell (outer semi-axes ``lateral``, ``lateral``, ``vertical`` mm; 5 mm thick): a tall skull
    whose vertex bulges, so a hole there is where the harmonic fill (no bulge inside a hole) falls short. Returns
    (defective, implant): the bone within ``hole_deg`` of the vertex removed."""
    shape = np.ceil(2 * (np.array([lateral, lateral, vertical]) + 6) / SPACING).astype(int)
    pos = np.indices(shape).transpose(1, 2, 3, 0) * SPACING - (shape - 1) / 2 * SPACING
    scaled = np.linalg.norm(pos / [lateral, lateral, vertical], axis=-1)
    inner = np.linalg.norm(pos / [lateral - THICK, lateral - THICK, vertical - THICK], axis=-1)
    bone = (scaled <= 1) & (inner >= 1)
    r = np.maximum(np.linalg.norm(pos, axis=-1), 1e-9)
    implant = bone & (pos[..., 2] > np.cos(np.radians(hole_deg)) * r) if hole_deg else np.zeros_like(bone)
    return bone & ~implant, implant


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("healthy")
    paths = []
    for i, (lateral, vertical) in enumerate([(30, 36), (32, 38), (31, 39), (34, 40), (29, 35), (33, 37)]):
        bone, _ = shell(lateral, vertical)
        paths.append(write_volume(folder / f"{i:03d}.nrrd", bone.astype(np.uint8), spacing=SPACING))
    model = build_shape_model(paths, step_deg=4.0, n_modes=3, log=lambda _: None)
    model.save(folder / "model.npz")
    return folder / "model.npz"


def test_a_saved_model_loads_the_same(model_file):
    model = ShapeModel.load(model_file)
    assert model.modes.shape == (3,) + model.mean.shape and model.valid.all()  # a closed shell: bone every way
    assert model.skulls == tuple(f"{i:03d}.nrrd" for i in range(6)) and np.all(np.diff(model.variance) <= 0)
    # the mean outer radius lies between the family's smallest and largest semi-axes
    assert 29 - 1.5 < model.mean[0].min() and model.mean[0].max() < 40 + 1.5


def test_the_fit_of_a_skull_of_the_family_away_from_the_hole_finds_its_radii_in_the_hole(model_file):
    model = ShapeModel.load(model_file)
    defective, implant = shell(31.5, 38, hole_deg=25)
    truth = skull_radii(defective | implant, SPACING, model.step_deg)
    units = chart_directions(model.step_deg)
    hole = units[..., 2] > np.cos(np.radians(30))
    predicted, holds = model.predict(units, model.fit(units, truth, ~hole))
    assert holds.all()
    # within a voxel and the rays' step over the hole, though nothing of the hole was fitted
    assert np.abs(predicted - truth)[:, hole].max() < 1.5


def test_the_model_fills_a_bulging_hole_better_than_the_harmonic_fill(model_file):
    defective, implant = shell(31.5, 38, hole_deg=25)
    harmonic = continue_surfaces(defective, SPACING, implant, SurfaceConfig(weight=1.0, step_deg=2.0))
    with_model = continue_surfaces(defective, SPACING, implant, SurfaceConfig(weight=1.0, step_deg=2.0,
                                                                               shape_model=str(model_file)))
    assert not (with_model & defective).any()
    # the model's share brings the bulge back
    assert dice(with_model, implant) > dice(harmonic, implant) + 0.1


def test_a_save_that_fails_leaves_the_file_there_as_it_was(model_file, tmp_path, monkeypatch):
    target = tmp_path / "model.npz"
    target.write_bytes(model_file.read_bytes())

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", killed)
    with pytest.raises(KeyboardInterrupt):
        ShapeModel.load(model_file).save(target)
    assert target.read_bytes() == model_file.read_bytes() and [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_a_file_that_is_not_a_model_is_refused_naming_it(tmp_path):
    bad = tmp_path / "model.npz"
    bad.write_text("not a model")
    with pytest.raises(ShapeModelError, match="model.npz"):
        ShapeModel.load(bad)
    np.savez(bad, format="something-else/1")
    with pytest.raises(ShapeModelError, match="not a skullrecon-shape-model/1 file"):
        ShapeModel.load(bad)


def test_too_few_skulls_for_the_modes_is_refused():
    with pytest.raises(ValueError, match="more than 10 skulls"):
        build_shape_model(["a.nrrd"] * 5, n_modes=10)
    with pytest.raises(ValueError, match="more than 1 skulls"):  # all modes (the default) of one skull: none
        build_shape_model(["a.nrrd"])
