"""bench/demo_spread.py: several runs' Table I side by side with each method's range."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from conftest import REPO


def _table(folder, values):
    folder.mkdir()
    pd.DataFrame({"dataset": ["skullfix"] * 2, "method": ["mae_d", "unet"], "dsc_mean": values,
                  "dsc_median": values}).to_csv(folder / "table1.csv", index=False)


def test_each_method_gets_its_runs_and_range(tmp_path):
    _table(tmp_path / "demo", [0.75, 0.60])
    _table(tmp_path / "demo-seed1", [0.78, 0.52])
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "demo_spread.py"), str(tmp_path / "demo"),
                           str(tmp_path / "demo-seed1")], capture_output=True, text=True, check=True)
    assert "| MAE (D) | 0.750 | 0.780 | 0.750-0.780 |" in proc.stdout
    assert "| UNet | 0.600 | 0.520 | 0.520-0.600 |" in proc.stdout


def test_an_unfinished_run_is_one_line_naming_the_file(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "demo_spread.py"), str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"{tmp_path / 'table1.csv'}: no Table I (is the run finished?)"
