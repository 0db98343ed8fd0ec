"""GPU jobs fail fast without a usable GPU, naming the node, instead of training on the CPU."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import pytest
import torch

from skullrecon.models import pick_device
from skullrecon.train import train_run

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a usable CUDA GPU")


def test_cuda_without_a_gpu_names_the_node(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ValueError, match=rf"no usable CUDA GPU on node {platform.node()}: device 'cuda'"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu" and pick_device("cpu").type == "cpu"


def test_auto_on_a_node_given_a_gpu_it_cannot_use_is_an_error(monkeypatch):
    """A CPU-only torch in a SLURM GPU job (the scheduler sets CUDA_VISIBLE_DEVICES) must not train on the CPU."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES=0"):
        pick_device("auto")
    assert pick_device("cpu").type == "cpu"  # an explicit CPU run on such a node is allowed
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert pick_device("auto").type == "cpu"


def test_training_job_stops_before_reading_data(tmp_path, monkeypatch):
    """The check comes first: the input folders here do not even exist."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ValueError, match="no usable CUDA GPU"):
        train_run(task="reconstruct", input_dirs=[tmp_path / "missing"], model_path=tmp_path / "m.pt",
                  history_path=tmp_path / "h.csv", checkpoint_dir=tmp_path / "ckpt", method="mae_d", arch="unet",
                  network={}, train={}, grid=32, margin=0.1, masking={}, device="cuda")
    assert not (tmp_path / "ckpt").exists()


def test_a_gpu_job_script_fails_within_seconds():
    """What a training job does first, as its own process: import the library and check the device."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from skullrecon.train import train_run; "
                           "from skullrecon.models import pick_device; pick_device('cuda')"],
                          capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"})
    seconds = time.perf_counter() - t0
    assert proc.returncode != 0 and platform.node() in proc.stderr, proc.stderr
    assert seconds < 60, seconds
