"""`skullrecon metrics` prints one strict JSON object, also for an empty prediction."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

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
