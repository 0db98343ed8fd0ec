"""``skullrecon export NAME --bundle DIR``: a released model as a MONAI bundle whose inference config,
run by MONAI's bundle runner, makes the reconstruction ``skullrecon reconstruct`` makes, voxel for voxel.

``python -m monai.bundle run`` needs the ``fire`` package, which skullrecon's environment does not
lock; where it is missing the tests call :func:`monai.bundle.run`, the function that command line
calls, with the same arguments.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, real_file, shell

NAME = "mae_d_gpu"  # the default release


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from skullrecon.cli import main

    out = tmp_path_factory.mktemp("bundle") / NAME
    assert main(["export", NAME, "--bundle", str(out)]) == 0
    return out


def _run_bundle(bundle: Path, jobs: list[tuple[Path, Path]], command_line: bool = False) -> None:
    """MONAI's bundle runner on each (input, output folder), in a process of its own."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    config = str(bundle / "configs" / "inference.json")
    if command_line:
        for src, out in jobs:
            subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--bundle_root",
                            str(bundle), "--input_file", str(src), "--output_dir", str(out)],
                           check=True, env=env, capture_output=True, text=True)
        return
    code = ("import sys, json; from monai.bundle import run\n"
            "for src, out in json.loads(sys.argv[1]):\n"
            f"    run(config_file={config!r}, bundle_root={str(bundle)!r}, input_file=src, output_dir=out)\n")
    subprocess.run([sys.executable, "-c", code, json.dumps([[str(s), str(o)] for s, o in jobs])], check=True, env=env,
                   capture_output=True, text=True)


def _reconstruct(src: Path, out: Path) -> dict:
    """What ``skullrecon reconstruct SRC --out OUT`` does without --model."""
    from skullrecon.infer import reconstruct_file
    from skullrecon.release import resolve_model

    model, sha256 = resolve_model(NAME)
    return reconstruct_file(src, model, out, device="cpu", sha256=sha256)


def _same_outputs(a: Path, b: Path, suffix: str) -> None:
    from skullrecon.io import read_volume

    for stem in ("implant", "reconstruction"):
        x, y = read_volume(a / f"{stem}{suffix}"), read_volume(b / f"{stem}{suffix}")
        assert x.array.shape == y.array.shape and np.array_equal(x.array, y.array), f"{stem}{suffix} differs"
        assert np.allclose(x.affine, y.affine)


def test_layout_metadata_and_licence(bundle):
    from skullrecon import __version__
    from skullrecon.bundle import MANDATORY_METADATA, TENSOR_KEYS

    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md",
                "docs/license.txt"):
        assert (bundle / rel).is_file(), rel
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    missing = [k for k in MANDATORY_METADATA if not meta.get(k) and meta.get(k) is not False]
    assert not missing, f"mandatory metadata keys missing or empty: {missing}"
    assert meta["required_packages_version"]["skullrecon"] == __version__
    for group in ("inputs", "outputs"):
        for name, tensor in meta["network_data_format"][group].items():
            assert set(TENSOR_KEYS) <= set(tensor), (group, name, set(TENSOR_KEYS) - set(tensor))
    card = json.loads((REPO / "models" / f"{NAME}.json").read_text())
    assert card["licence"] in (bundle / "docs" / "license.txt").read_text()
    assert meta["eval_metrics"]["mean_dice"] == card["metrics"]["test"]["dsc_mean"]
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["ckpt_sha256"] == hashlib.sha256((bundle / "models" / "model.pt").read_bytes()).hexdigest()
    assert meta["skullrecon_release"]["file_sha256"] == card["sha256"]


def test_export_refuses_a_folder_in_use_and_unknown_names(tmp_path, capsys):
    from skullrecon.cli import main

    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    assert main(["export", NAME, "--bundle", str(tmp_path / "used")]) == 2
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
    assert main(["export", "no_such_model", "--bundle", str(tmp_path / "new")]) == 2
    assert "no_such_model" in capsys.readouterr().err


def test_a_changed_model_pt_is_refused(bundle, tmp_path):
    import shutil

    from skullrecon.bundle import load_weights

    copy = tmp_path / "model.pt"
    shutil.copyfile(bundle / "models" / "model.pt", copy)
    with open(copy, "ab") as fh:
        fh.write(b"\0")
    sha = json.loads((bundle / "configs" / "inference.json").read_text())["ckpt_sha256"]
    with pytest.raises(ValueError, match="SHA-256"):
        load_weights(None, str(copy), sha, "cpu")  # refused before any network is touched


def test_bundle_run_equals_reconstruct_nrrd_and_nifti(bundle, tmp_path):
    """A small synthetic skull as NRRD and as NIfTI through the bundle and through reconstruct."""
    from skullrecon.io import write_volume

    skull = shell((96, 96, 80), radii=(40, 36, 30), thickness=4.0).astype(np.uint8)
    skull[28:68, 30:66, 58:] = 0
    jobs = []
    for suffix in (".nrrd", ".nii.gz"):
        src = write_volume(tmp_path / f"defective{suffix}", skull, spacing=(2.0, 2.0, 2.2))
        _reconstruct(src, tmp_path / f"cli{suffix}")
        jobs.append((src, tmp_path / f"bundle{suffix}"))
    _run_bundle(bundle, jobs)
    for suffix in (".nrrd", ".nii.gz"):
        _same_outputs(tmp_path / f"cli{suffix}", tmp_path / f"bundle{suffix}", suffix)


@pytest.mark.slow  # about 25 s: the real 512x512x237 skull through both
def test_bundle_run_equals_reconstruct_on_real_skull_000(bundle, tmp_path):
    defective = real_file("real/aimaster_training_set_defective_skull_000.nrrd")
    cli = _reconstruct(defective, tmp_path / "cli")
    _run_bundle(bundle, [(defective, tmp_path / "bundle")], command_line=importlib.util.find_spec("fire") is not None)
    _same_outputs(tmp_path / "cli", tmp_path / "bundle", ".nrrd")
    print(f"real skull 000: bundle and reconstruct agree on all {cli['implant_voxels']} implant voxels "
          f"({'python -m monai.bundle run' if importlib.util.find_spec('fire') else 'monai.bundle.run'})")
