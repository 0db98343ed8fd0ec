"""`skullrecon metrics` prints one strict JSON object, also for an empty prediction."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from skullrecon.io import write_volume
from skullrecon.metrics import evaluate_case


def _run(*args):
    return subprocess.run([sys.executable, "-m", "skullrecon.cli", *args], capture_output=True, text=True)


def test_metrics_command_prints_the_library_values(tmp_path):
    shape, spacing = (30, 30, 30), (1.0, 1.0, 2.0)
    defective = np.zeros(shape, np.uint8)
    defective[5:25, 5:25, 5:7] = 1
    defective[10:16, 10:16, 5:7] = 0
    gt = np.zeros(shape, np.uint8)
    gt[10:16, 10:16, 5:7] = 1
    pred = np.zeros(shape, np.uint8)
    pred[11:17, 10:16, 5:8] = 1
    for name, arr in (("d", defective), ("g", gt), ("p", pred)):
        write_volume(tmp_path / f"{name}.nrrd", arr, spacing=spacing)
    proc = _run("metrics", "--pred", str(tmp_path / "p.nrrd"), "--gt", str(tmp_path / "g.nrrd"),
                "--defective", str(tmp_path / "d.nrrd"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    expected = evaluate_case(pred, gt, defective, spacing)
    assert set(out) == {"dsc", "bdsc", "hd95"}
    for key in out:
        assert np.isclose(out[key], expected[key])

    write_volume(tmp_path / "empty.nrrd", np.zeros(shape, np.uint8), spacing=spacing)
    proc = _run("metrics", "--pred", str(tmp_path / "empty.nrrd"), "--gt", str(tmp_path / "g.nrrd"),
                "--defective", str(tmp_path / "d.nrrd"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) == {
        "dsc": 0.0, "bdsc": 0.0, "hd95": None}


def test_metrics_command_names_a_missing_file(tmp_path):
    proc = _run("metrics", "--pred", str(tmp_path / "nope.nrrd"), "--gt", str(tmp_path / "g.nrrd"),
                "--defective", str(tmp_path / "d.nrrd"))
    assert proc.returncode == 2
    assert "nope.nrrd" in proc.stderr and "Traceback" not in proc.stderr


def _one_error_line(proc, command: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"skullrecon {command}: error:"), proc.stderr
    return lines[0]


@pytest.mark.parametrize("extra, needle", [
    (["--spacing", "0", "1", "1"], "spacing"),
    (["--spacing", "nan", "1", "1"], "spacing"),
    (["--n-train", "-2"], "n_train"),
    (["--shape", "64", "64"], "--shape"),
])
def test_synthetic_bad_numbers_are_one_line(tmp_path, extra, needle):
    proc = _run("synthetic", str(tmp_path / "d"), "--n-train", "1", "--n-test", "0", *extra)
    assert needle in _one_error_line(proc, "synthetic")
    assert not (tmp_path / "d").exists()


def test_synthetic_refuses_a_folder_with_a_dataset_in_it(tmp_path):
    real = tmp_path / "d" / "training" / "complete_skull" / "000.nrrd"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"real")
    proc = _run("synthetic", str(tmp_path / "d"), "--n-train", "1", "--n-test", "0")
    assert str(real) in _one_error_line(proc, "synthetic")
    assert real.read_bytes() == b"real"


def test_download_into_a_folder_named_like_the_archive_is_one_line(tmp_path):
    (tmp_path / "archives" / "skullfix_training_set.zip").mkdir(parents=True)
    proc = _run("download", "skullfix", "--dest", str(tmp_path), "--quiet")
    assert "skullfix_training_set.zip: the download destination is a folder" in _one_error_line(proc, "download")


def test_metrics_on_another_grid_is_one_line(tmp_path):
    a = np.zeros((12, 12, 12), np.uint8)
    a[3:8, 3:8, 3:8] = 1
    write_volume(tmp_path / "g.nrrd", a, spacing=(0.5, 0.5, 0.5))
    write_volume(tmp_path / "d.nrrd", a, spacing=(0.5, 0.5, 0.5))
    write_volume(tmp_path / "p.nrrd", a, spacing=(2.0, 2.0, 2.0))
    proc = _run("metrics", "--pred", str(tmp_path / "p.nrrd"), "--gt", str(tmp_path / "g.nrrd"),
                "--defective", str(tmp_path / "d.nrrd"))
    line = _one_error_line(proc, "metrics")
    assert "p.nrrd" in line and "spacing" in line and proc.stdout == ""
