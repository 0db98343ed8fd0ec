"""``skullrecon reconstruct``: one defective skull and a model file in, implant volume and STL out.

The model is a tiny supervised UNet (grid 32) committed as tests/data/reconstruct-unet.pt, made by
tests/data/make_reconstruct_model.py on a synthetic SkullBreak-like set of four skulls with the
bilateral (top-of-head) defect. The test generates the same seeded set and asks the model for the
implant of its fifth, held-out skull. It is not trained here: what a short training reaches
depends on the CPU's floating point, and the two tests that need a quality failed elsewhere
(issue 20). Inference alone moves probabilities by rounding errors, far below the margins below.

The CLI runs once as a real subprocess (checks there is no traceback and the exit codes), the
other inputs go through ``cli.main`` in-process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import torch

from skullrecon.cli import main
from test_mesh import check_closed_mesh, read_stl

DATA = Path(__file__).resolve().parent / "data"
_spec = importlib.util.spec_from_file_location("make_reconstruct_model", DATA / "make_reconstruct_model.py")
made = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(made)
SHAPE, SPACING = made.SHAPE, made.SPACING
# The committed model's held-out DSC is 0.336 (0.317-0.351 with the probability threshold moved
# to 0.45-0.55, far more than rounding moves a probability). An empty implant scores 0, and so
# does a cap of the right size anywhere but over the defect: 0.2 fails only when the implant is
# mostly in the wrong place. Not raised to the model's value: the test is about the command.
MIN_DSC = 0.2
STAGES = {"load", "preprocess", "network", "upsample", "extract", "write"}  # write: volumes and mesh, side by side


def _dice(a, b) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The committed model, the synthetic data, and the held-out defective skull with its implant."""
    tmp = tmp_path_factory.mktemp("reconstruct")
    root = made.make_data(tmp / "data")
    return {
        "model": made.MODEL,
        "defective": root / "testing" / "defective_skull" / "bilateral" / "000.nrrd",
        "implant": root / "testing" / "implant" / "bilateral" / "000.nrrd",
        "tmp": tmp,
    }


@pytest.fixture(scope="module")
def nrrd_run(inputs):
    """The command run once as a user would: a separate process on the held-out NRRD skull."""
    out = inputs["tmp"] / "out_nrrd"
    proc = subprocess.run(
        [sys.executable, "-m", "skullrecon.cli", "reconstruct", str(inputs["defective"]),
         "--model", str(inputs["model"]), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    return proc, out


def _affine_from_nrrd_header(header: dict) -> np.ndarray:
    """Voxel index -> mm straight from the NRRD header (independent of skullrecon.io)."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(header["space directions"], float).T  # row j of the header = axis j
    affine[:3, 3] = np.asarray(header["space origin"], float)
    return affine


def _check_stl(stl: Path, implant: np.ndarray, affine: np.ndarray) -> None:
    """Watertight, outward-wound, right volume, and where the implant voxels are (mm)."""
    tri, _ = read_stl(stl)
    volume = check_closed_mesh(tri)
    voxel_mm3 = abs(np.linalg.det(affine[:3, :3]))
    assert volume > 0, "triangles are wound inward"
    assert volume == pytest.approx(implant.sum() * voxel_mm3, rel=0.15)
    centres = np.argwhere(implant) @ affine[:3, :3].T + affine[:3, 3]
    one_voxel = np.linalg.norm(affine[:3, :3], axis=0).max()
    verts = tri.reshape(-1, 3)
    np.testing.assert_allclose(verts.min(0), centres.min(0), atol=one_voxel)
    np.testing.assert_allclose(verts.max(0), centres.max(0), atol=one_voxel)


def test_cli_reconstructs_held_out_nrrd_skull(inputs, nrrd_run):
    proc, out = nrrd_run
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert STAGES <= set(result["seconds"]) and all(v >= 0 for v in result["seconds"].values())
    assert result["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # chosen automatically
    assert {Path(p).name for p in result["paths"].values()} == {"implant.nrrd", "reconstruction.nrrd", "implant.stl"}

    in_data, in_header = nrrd.read(str(inputs["defective"]))
    implant, header = nrrd.read(str(out / "implant.nrrd"))
    recon, _ = nrrd.read(str(out / "reconstruction.nrrd"))
    assert implant.shape == in_data.shape and implant.dtype == in_data.dtype
    for key in ("type", "space", "kinds", "encoding"):
        assert header[key] == in_header[key] if not isinstance(header[key], list) else list(header[key]) == list(in_header[key])
    np.testing.assert_array_equal(header["space directions"], in_header["space directions"])
    np.testing.assert_array_equal(header["space origin"], in_header["space origin"])
    assert set(np.unique(implant)) <= {0, 1} and implant.sum() == result["implant_voxels"] > 0

    truth, _ = nrrd.read(str(inputs["implant"]))
    dsc = _dice(implant, truth)
    print(f"held-out DSC {dsc:.4f}")  # shown with -rP
    assert dsc > MIN_DSC, f"held-out DSC {dsc:.4f}"
    assert not (implant.astype(bool) & in_data.astype(bool)).any(), "implant overlaps the skull"
    assert np.all(recon[in_data > 0] == 1), "reconstruction lost part of the defective skull"
    np.testing.assert_array_equal(recon.astype(bool), in_data.astype(bool) | implant.astype(bool))

    _check_stl(out / "implant.stl", implant, _affine_from_nrrd_header(header))


def test_nifti_input_gives_nifti_outputs_on_its_affine(inputs, nrrd_run, tmp_path, capsys):
    data, _ = nrrd.read(str(inputs["defective"]))
    affine = np.diag([-3.0, 3.0, 4.0, 1.0])  # mirroring (det < 0): the STL winding must follow
    affine[:3, 3] = (90.0, -96.0, -30.0)
    src = tmp_path / "skull.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), str(src))

    assert main(["reconstruct", str(src), "--model", str(inputs["model"]), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    img = nib.load(str(tmp_path / "out" / "implant.nii.gz"))
    assert (tmp_path / "out" / "reconstruction.nii.gz").exists()
    np.testing.assert_array_equal(img.affine, nib.load(str(src)).affine)
    assert img.shape == data.shape and img.get_data_dtype() == np.uint8
    implant = np.asarray(img.dataobj)
    # same voxels and spacing as the NRRD run: the implant must be the same voxels
    np.testing.assert_array_equal(implant, nrrd.read(str(nrrd_run[1] / "implant.nrrd"))[0])
    _check_stl(tmp_path / "out" / "implant.stl", implant, img.affine)


def test_oblique_int32_nrrd_keeps_header_and_mesh_follows_affine(inputs, nrrd_run, tmp_path, capsys):
    data, header = nrrd.read(str(inputs["defective"]))
    a, b = np.deg2rad(25), np.deg2rad(-10)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ \
        np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    header = dict(header)
    header["space directions"] = (rot @ np.diag(SPACING)).T  # rows: directions of the array axes
    header["space origin"] = np.array([-75.0, 20.0, 110.0])
    assert np.abs(header["space directions"] - np.diag(np.diag(header["space directions"]))).max() > 0.5
    src = tmp_path / "oblique.nrrd"
    nrrd.write(str(src), data.astype(np.int32), header)

    assert main(["reconstruct", str(src), "--model", str(inputs["model"]), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    implant, out_header = nrrd.read(str(tmp_path / "out" / "implant.nrrd"))
    assert implant.dtype == np.int32 and out_header["type"] == "int32"
    np.testing.assert_allclose(out_header["space directions"], header["space directions"])
    np.testing.assert_allclose(out_header["space origin"], header["space origin"])
    # the network sees voxels and spacing only: the same implant voxels as the axis-aligned run
    np.testing.assert_array_equal(implant, nrrd.read(str(nrrd_run[1] / "implant.nrrd"))[0])
    _check_stl(tmp_path / "out" / "implant.stl", implant, _affine_from_nrrd_header(out_header))
    # and the mesh did move with the affine: its bounds differ from the axis-aligned mesh's
    straight, _ = read_stl(nrrd_run[1] / "implant.stl")
    oblique, _ = read_stl(tmp_path / "out" / "implant.stl")
    assert np.abs(straight.reshape(-1, 3).min(0) - oblique.reshape(-1, 3).min(0)).max() > 10


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("skullrecon reconstruct: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_bad_model_file_is_one_clear_line_from_a_real_process(inputs, tmp_path):
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"this is not a model\n" * 10)
    proc = subprocess.run(
        [sys.executable, "-m", "skullrecon.cli", "reconstruct", str(inputs["defective"]),
         "--model", str(bogus), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert str(bogus) in _error_line(proc.stderr)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_bad_skull_read_beside_the_import_is_one_line_from_a_real_process(inputs, tmp_path):
    """The command reads the skull in a forked process while torch is imported; its error still
    reaches the user as one line naming the file, exit 2, and nothing is written."""
    nonbinary = _bad_inputs(tmp_path, inputs["defective"])["nonbinary"][0]
    proc = subprocess.run(
        [sys.executable, "-m", "skullrecon.cli", "reconstruct", str(nonbinary),
         "--model", str(inputs["model"]), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    line = _error_line(proc.stderr)
    assert str(nonbinary) in line and "binary" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_skull_read_beforehand_gives_the_same_outputs(inputs, tmp_path):
    """reconstruct_file(volume=...) (the command line's path: the skull read beside torch's import, in
    another process) writes exactly what reading it itself writes."""
    from skullrecon.cli import _beside
    from skullrecon.infer import reconstruct_file
    from skullrecon.io import read_volume

    with _beside() as pool:
        volume = pool.submit(read_volume, inputs["defective"]).result()
    direct = read_volume(inputs["defective"])
    np.testing.assert_array_equal(volume.array, direct.array)
    np.testing.assert_array_equal(volume.affine, direct.affine)
    a = reconstruct_file(inputs["defective"], inputs["model"], tmp_path / "a", device="cpu")
    b = reconstruct_file(inputs["defective"], inputs["model"], tmp_path / "b", device="cpu", volume=volume)
    for name in ("implant", "reconstruction"):
        np.testing.assert_array_equal(nrrd.read(a["paths"][name])[0], nrrd.read(b["paths"][name])[0])
    assert Path(a["paths"]["mesh"]).read_bytes() == Path(b["paths"]["mesh"]).read_bytes()


def _bad_inputs(tmp: Path, good: Path) -> dict[str, tuple[Path, Path | None]]:
    """name -> (defective file, model file or None for the good model); the one at fault is named."""
    data, header = nrrd.read(str(good))
    nonbinary = tmp / "labels.nrrd"
    labels = data.astype(np.uint8)
    labels[0, 0, 0] = 3  # one stray label value
    nrrd.write(str(nonbinary), labels, header)
    empty = tmp / "empty.nrrd"
    nrrd.write(str(empty), np.zeros_like(data), header)
    torch_not_model = tmp / "weights.pt"
    torch.save({"state_dict": {}}, torch_not_model)
    wrong_ext = tmp / "skull.mha"
    wrong_ext.write_bytes(b"x")
    return {
        "missing": (tmp / "no_such_skull.nrrd", None),
        "nonbinary": (nonbinary, None),
        "empty_skull": (empty, None),
        "unknown_format": (wrong_ext, None),
        "model_missing": (good, tmp / "no_such_model.pt"),
        "model_not_skullrecon": (good, torch_not_model),
    }


@pytest.mark.parametrize("case", ["missing", "nonbinary", "empty_skull", "unknown_format",
                                  "model_missing", "model_not_skullrecon"])
def test_bad_input_exits_2_with_one_line_naming_the_file(inputs, tmp_path, capsys, case):
    defective, model = _bad_inputs(tmp_path, inputs["defective"])[case]
    blamed = model if model is not None else defective
    code = main(["reconstruct", str(defective), "--model", str(model or inputs["model"]),
                 "--out", str(tmp_path / "out")])
    assert code == 2
    line = _error_line(capsys.readouterr().err)
    assert str(blamed) in line
    if case == "nonbinary":
        assert "binary" in line


def _blind_model(inputs, path: Path) -> Path:
    """A model that finds no defect: every logit -20, probability ~0 everywhere."""
    from skullrecon.models import build_network, load_model, save_model

    _, spec = load_model(inputs["model"])
    net = build_network(spec["arch"], spec["network"], spec["grid"])
    with torch.no_grad():
        biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
        for p in net.parameters():
            p.zero_()
        biases[-1].fill_(-20.0)
    return save_model(path, net, spec)


def test_empty_implant_exits_3_with_a_warning(inputs, tmp_path, capsys):
    """A model that finds no defect: outputs still written (empty implant), no STL, exit code 3."""
    _blind_model(inputs, tmp_path / "blind.pt")
    code = main(["reconstruct", str(inputs["defective"]), "--model", str(tmp_path / "blind.pt"),
                 "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 3
    assert "warning" in captured.err and "empty" in captured.err and "Traceback" not in captured.err
    result = json.loads(captured.out)
    assert result["empty"] and result["implant_voxels"] == 0 and "mesh" not in result["paths"]
    implant, _ = nrrd.read(str(tmp_path / "out" / "implant.nrrd"))
    assert implant.shape == SHAPE and not implant.any()
    assert not (tmp_path / "out" / "implant.stl").exists()


@pytest.mark.slow  # about 20 s: reading, resampling and writing 512^3 volumes
def test_reconstruct_on_real_skullbreak_skull(inputs, tmp_path):
    """The real 512^3, 0.4 mm NIfTI goes through (the tiny model is not accurate: form only)."""
    from conftest import real_file
    from skullrecon.infer import reconstruct_file

    src = real_file("real/autoimplantpipe_skullbreak_parietotemporal_001.nii.gz")
    result = reconstruct_file(src, inputs["model"], tmp_path / "out", device="cpu")
    img = nib.load(str(tmp_path / "out" / "implant.nii.gz"))
    assert img.shape == (512, 512, 512)
    np.testing.assert_array_equal(img.affine, nib.load(str(src)).affine)
    assert STAGES <= set(result["seconds"])
    if not result["empty"]:
        implant = np.asarray(img.dataobj)
        _check_stl(tmp_path / "out" / "implant.stl", implant, img.affine)


# --------------------------------------------------------------------------------------------
# the output folder: one set, nothing stale, nothing of the user's replaced


def _run_main(capsys, *args) -> tuple[int, str]:
    code = main(["reconstruct", *map(str, args)])
    return code, capsys.readouterr().err


def test_rerun_without_stl_or_with_an_empty_implant_leaves_no_stale_stl(inputs, tmp_path, capsys):
    from skullrecon.outputset import read_manifest

    out = tmp_path / "out"
    assert _run_main(capsys, inputs["defective"], "--model", inputs["model"], "--out", out)[0] == 0
    assert (out / "implant.stl").exists() and "implant.stl" in read_manifest(out)["files"]
    assert _run_main(capsys, inputs["defective"], "--model", inputs["model"], "--out", out, "--no-stl")[0] == 0
    assert not (out / "implant.stl").exists()
    assert set(read_manifest(out)["files"]) == {"implant.nrrd", "reconstruction.nrrd"}

    assert _run_main(capsys, inputs["defective"], "--model", inputs["model"], "--out", out)[0] == 0
    assert (out / "implant.stl").exists()
    code, err = _run_main(capsys, inputs["defective"], "--model", _blind_model(inputs, tmp_path / "b.pt"), "--out", out)
    assert code == 3 and "empty" in err
    assert not (out / "implant.stl").exists()
    implant, _ = nrrd.read(str(out / "implant.nrrd"))
    assert not implant.any() and read_manifest(out)["empty"]


def test_an_input_the_run_would_replace_is_refused_and_kept(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run_main(capsys, inputs["defective"], "--model", inputs["model"], "--out", out)[0] == 0
    before = (out / "implant.nrrd").read_bytes()
    code, err = _run_main(capsys, out / "implant.nrrd", "--model", inputs["model"], "--out", out)
    assert code == 2
    line = _error_line(err)
    assert str(out / "implant.nrrd") in line and "would replace" in line
    assert (out / "implant.nrrd").read_bytes() == before

    # a file of the user's under an output name, not written by us: refused, untouched
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "implant.stl").write_bytes(b"my own mesh")
    code, err = _run_main(capsys, inputs["defective"], "--model", inputs["model"], "--out", mine)
    assert code == 2 and str(mine / "implant.stl") in _error_line(err)
    assert (mine / "implant.stl").read_bytes() == b"my own mesh"
    # an input inside --out under another name is fine and left alone
    (mine / "implant.stl").unlink()
    (mine / "skull.nrrd").write_bytes(inputs["defective"].read_bytes())
    assert _run_main(capsys, mine / "skull.nrrd", "--model", inputs["model"], "--out", mine)[0] == 0
    assert (mine / "skull.nrrd").read_bytes() == inputs["defective"].read_bytes()


_KILL_AFTER_ONE_FILE = """
import os, sys
import skullrecon.outputset as o
moved = []
def move(src, dst):
    if moved:
        os._exit(137)  # as a SIGKILL: no cleanup runs
    moved.append(dst)
    os.replace(src, dst)
o._move = move
from skullrecon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_between_files_leaves_no_set_that_looks_finished(inputs, tmp_path):
    """A real process killed after moving one file: an unfinished manifest, no file of the old set beside
    the new one; the next run finishes and the set verifies."""
    from skullrecon.outputset import MANIFEST, OutputError, read_manifest

    out = tmp_path / "out"
    args = ["reconstruct", str(inputs["defective"]), "--model", str(inputs["model"]), "--out", str(out)]
    assert main(args) == 0
    old = {n: e["sha256"] for n, e in read_manifest(out)["files"].items()}
    blind = _blind_model(inputs, tmp_path / "b.pt")  # another result, so old and new files differ
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_ONE_FILE, *args[:3], str(blind), *args[4:]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137
    assert json.loads((out / MANIFEST).read_text())["complete"] is False
    with pytest.raises(OutputError, match="did not finish"):
        read_manifest(out)
    import hashlib

    left = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir() if p.is_file()}
    assert not any(old.get(name) == digest for name, digest in left.items()), left  # nothing old remains
    assert main(args) == 0
    assert set(read_manifest(out)["files"]) == {"implant.nrrd", "reconstruction.nrrd", "implant.stl"}
    assert not list(out.glob(".skullrecon-staging-*"))


def test_a_complete_skull_warns_that_there_is_nothing_to_fill(inputs, tmp_path, capsys):
    # the committed model's implant for the complete skull is 75 voxels, 0.52 % of its bone (0.37-0.62 %
    # with the threshold at 0.45-0.55): neither empty nor near the warning's bound of 1 %
    complete = inputs["defective"].parents[2] / "complete_skull" / "000.nrrd"
    code, err = _run_main(capsys, complete, "--model", inputs["model"], "--out", tmp_path / "out")
    assert code == 3
    assert "nothing to fill" in err and str(complete) in err and "Traceback" not in err
    # the defective skull of the same subject gets no warning
    assert _run_main(capsys, inputs["defective"], "--model", inputs["model"], "--out", tmp_path / "o2")[0] == 0


def _model_with(inputs, path: Path, change) -> Path:
    blob = torch.load(inputs["model"], weights_only=True)
    change(blob["spec"])
    torch.save(blob, path)
    return path


_SPEC_CHANGES = {
    "missing_keys": lambda s: s.pop("grid"),
    "wrong_type": lambda s: s.update(grid="32"),
    "wrong_channels": lambda s: s["network"].update(in_channels=2),
    "weights_do_not_fit": lambda s: s["network"].update(channels=[4, 8, 16]),
    "grid_100000": lambda s: s.update(grid=100000),
    "threshold_minus_1": lambda s: s["postprocess"].update(threshold=-1),
}


@pytest.mark.parametrize("change", sorted(_SPEC_CHANGES))
def test_malformed_model_spec_is_one_line_naming_the_model(inputs, tmp_path, capsys, change):
    model = _model_with(inputs, tmp_path / "bad.pt", _SPEC_CHANGES[change])
    code, err = _run_main(capsys, inputs["defective"], "--model", model, "--out", tmp_path / "out")
    assert code == 2
    assert str(model) in _error_line(err)


def test_unusable_out_and_device_are_one_line(inputs, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, blamed in ((afile, afile), (afile / "sub", afile)):
        code, err = _run_main(capsys, inputs["defective"], "--model", inputs["model"], "--out", out)
        assert code == 2 and str(blamed) in _error_line(err)
    assert afile.read_text() == "x"
    code, err = _run_main(capsys, inputs["defective"], "--model", inputs["model"], "--out", tmp_path / "o",
                          "--device", "foo")
    assert code == 2 and "'foo'" in _error_line(err)
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_one_line(inputs, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, err = _run_main(capsys, inputs["defective"], "--model", inputs["model"], "--out", ro / "out")
    finally:
        ro.chmod(0o700)
    assert code == 2 and str(ro / "out") in _error_line(err)
