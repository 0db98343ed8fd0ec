"""The package as someone outside the repository gets it: a wheel, installed (not editable) elsewhere.

The wheel is built from a copy of the clone's packaging files (``pip wheel --no-deps
--no-build-isolation``), installed into a scratch virtual environment outside the clone, and its
``skullrecon`` command is run from a folder outside the clone: ``--version``, ``models`` (every release,
from the wheel's own copy) and ``reconstruct`` without ``--model`` (the default release). The scratch
environment sees the test environment's packages (torch, MONAI, ...) through a ``.pth`` line, so nothing is
downloaded or reinstalled, and the clone's ``src/`` is not on its path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, real_file, shell

PACKAGING = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src", "models"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SKULLRECON_MODELS", "PYTHONHOME")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """Build the wheel, install it into a scratch venv; returns the wheel, the venv's python and its command."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in PACKAGING:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, source / name)
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(source)], check=True, env=_env(), cwd=root)
    wheel = next(dist.glob("skullrecon-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=_env())
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # this environment's packages (torch, MONAI, pip), read-only; its own .pth files (an editable
    # skullrecon of the clone) are not processed from there, so the clone's src/ stays off the path
    (site / "zz_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
                    "--no-compile", str(wheel)], check=True, env=_env(), cwd=root)
    return {"wheel": wheel, "python": python, "command": venv / "bin" / "skullrecon", "site": site, "root": root}


def _run(installed: dict[str, Path], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed["command"]), *args], capture_output=True, text=True, env=_env(),
                          cwd=installed["root"], check=check)


def test_the_wheel_carries_every_release(installed):
    import zipfile

    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    cards = sorted((REPO / "models").glob("*.json"))
    assert cards, "no released models in models/"
    for path in cards:
        card = json.loads(path.read_text())
        # a card, its Markdown and the files it names (a two-stage release: its first and its second stage; a
        # surface release: its shape model)
        files = [path.name, path.with_suffix(".md").name, card["file"]] + (
            [card["refiner"]["file"]] if card.get("refiner") else []) + (
            [card["surface"]["shape_model"]["file"]] if card.get("surface", {}).get("shape_model") else [])
        for file in files:
            assert f"skullrecon/released_models/{file}" in names
    assert "skullrecon/__init__.py" in names


def test_installed_package_has_a_version_and_its_models(installed):
    out = subprocess.run([str(installed["python"]), "-c", "import skullrecon, skullrecon.release as r; "
                          "print(skullrecon.__file__); print(skullrecon.__version__); print(r.models_dir())"],
                         capture_output=True, text=True, env=_env(), cwd=installed["root"], check=True).stdout.split("\n")
    package, version, folder = Path(out[0]), out[1], Path(out[2])
    assert package.is_relative_to(installed["site"]), f"imported {package}, not the installed wheel"
    assert folder == installed["site"] / "skullrecon" / "released_models"
    import tomllib

    import skullrecon

    assert version == skullrecon.__version__
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dynamic"] == ["version"]
    assert _run(installed, "--version").stdout.strip() == f"skullrecon {version}"

    listed = json.loads(_run(installed, "models", "--json").stdout)
    assert sorted(h["name"] for h in listed) == sorted(p.stem for p in (REPO / "models").glob("*.json"))
    text = _run(installed, "models").stdout
    assert "no released models" not in text and str(folder) in text


def test_installed_reconstruct_without_model(installed, tmp_path):
    """The default release, checksum-verified from the wheel's copy, on a small synthetic skull."""
    from skullrecon.io import read_volume, write_volume

    skull = shell((96, 96, 80), radii=(40, 36, 30), thickness=4.0).astype(np.uint8)
    skull[30:66, 30:66, 60:] = 0  # a hole in the top
    path = tmp_path / "defective.nrrd"
    write_volume(path, skull, spacing=(2.0, 2.0, 2.0))
    done = _run(installed, "reconstruct", str(path), "--out", str(tmp_path / "out"), "--no-stl", check=False)
    assert done.returncode in (0, 3), done.stderr  # 3: outputs written, the implant judged small
    result = json.loads(done.stdout)
    manifest = json.loads((tmp_path / "out" / "skullrecon-reconstruct.json").read_text())
    assert Path(manifest["model"]) == installed["site"] / "skullrecon" / "released_models" / "mae_d_gpu.pt"
    # the default's second stage is the surface stage, which has no network: its settings are in the manifest
    assert manifest["refiner"] is None and manifest["surface"]["weight"] == 0.75
    assert Path(manifest["surface"]["shape_model"]) == installed["site"] / "skullrecon" / "released_models" / (
        "shape_model_skullfix.npz")  # its shape model from the wheel's copy, checked against the card
    assert read_volume(result["paths"]["implant"]).array.shape == skull.shape


@pytest.mark.slow  # about 10 s: a 512x512x237 skull read, reconstructed and scored
def test_installed_reconstruct_real_skull_000(installed, tmp_path):
    """Real SkullFix skull 000 without --model: the implant against the true one."""
    defective = real_file("real/aimaster_training_set_defective_skull_000.nrrd")
    truth = real_file("real/aimaster_training_set_implant_000.nrrd")
    done = _run(installed, "reconstruct", str(defective), "--out", str(tmp_path / "out"))
    result = json.loads(done.stdout)
    from skullrecon.metrics import metrics_for_files

    scores = metrics_for_files(result["paths"]["implant"], truth, defective)
    print(f"installed wheel, default model, real skull 000: DSC {scores['dsc']:.4f}, boundary DSC "
          f"{scores['bdsc']:.4f}, HD95 {scores['hd95']:.2f} mm")
    assert scores["dsc"] > 0.8
