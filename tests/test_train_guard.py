"""No training goes on past a non-finite step: the step is skipped and logged, a run that keeps
producing them stops with one line and keeps its last good checkpoint; bf16 on a CPU only where
its convolutions agree with float32.

Non-finite values are made on purpose (a loss or a gradient replaced by NaN at chosen steps), so
these tests do not depend on any CPU's floating point. Same tiny setup as tests/test_train.py.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import skullrecon.train as train
from skullrecon.runlog import to_file
from skullrecon.train import NonFiniteStep, TrainConfig, TrainingStopped, bf16_conv_faults, step_problem, train_model
from test_train import SETTINGS, SPEC, _cases, one_thread, prepared  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[1]


class _NanGradient(torch.autograd.Function):
    """The identity forward, NaN backward: a finite loss whose gradients are not finite."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _poison(monkeypatch, calls: set[int] | None = None, from_call: int | None = None, what: str = "gradient"):
    """Make the loss (or its gradient) NaN at the given 0-based training-loss calls."""
    real_loss_fn, count = train._loss_fn, {"n": 0}

    def poisoned_loss_fn(cfg):
        loss = real_loss_fn(cfg)

        def call(logits, target, given=None):
            n, count["n"] = count["n"], count["n"] + 1
            if (calls is not None and n in calls) or (from_call is not None and n >= from_call):
                if what == "loss":
                    return loss(logits, target, given) * float("nan")
                return loss(_NanGradient.apply(logits), target, given)
            return loss(logits, target, given)
        return call

    monkeypatch.setattr(train, "_loss_fn", poisoned_loss_fn)


def _run(prepared, out: Path, logs: list[str], **overrides):
    return train_model("implant", _cases(prepared), out / "model.pt", SPEC, TrainConfig(**{**SETTINGS, **overrides}),
                       out / "ckpt", out / "ckpt" / "history.csv", device="cpu", progress=False, log=logs.append)


def _history(out: Path) -> list[dict]:
    with open(out / "ckpt" / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("what", ["gradient", "loss"])
def test_a_non_finite_step_is_skipped_logged_and_leaves_the_optimiser_clean(prepared, tmp_path, monkeypatch, what):
    _poison(monkeypatch, calls={1}, what=what)  # epoch 1, step 2 (3 training cases: 3 steps an epoch)
    logs: list[str] = []
    summary = _run(prepared, tmp_path, logs, epochs=2)
    assert math.isfinite(summary["val_dsc"])
    skipped = [line for line in logs if "step skipped" in line]
    assert len(skipped) == 1 and "epoch 1, step 2: non-finite" in skipped[0] and what in skipped[0], logs
    assert [int(r["skipped_steps"]) for r in _history(tmp_path)] == [1, 0]
    assert all(math.isfinite(float(r["train_loss"])) for r in _history(tmp_path))
    state = torch.load(tmp_path / "ckpt" / "last.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(w).all() for w in state["model"].values())
    moments = state["optimizer"]["state"].values()
    assert {float(m["step"]) for m in moments} == {5.0}  # 6 steps, 1 refused: AdamW never saw it
    assert all(torch.isfinite(m["exp_avg"]).all() and torch.isfinite(m["exp_avg_sq"]).all() for m in moments)


def test_persistent_non_finite_steps_stop_with_one_line_keeping_the_last_good_checkpoint(prepared, tmp_path,
                                                                                         monkeypatch):
    _poison(monkeypatch, from_call=3)  # every step from epoch 2 on
    logs: list[str] = []
    with pytest.raises(TrainingStopped) as stopped:
        _run(prepared, tmp_path, logs, epochs=4)
    line = str(stopped.value)
    assert "\n" not in line
    assert line.startswith("unet: training stopped in epoch 2: 3 steps in a row had a non-finite gradient"), line
    assert "checkpoint" in line and "epoch 1)" in line and "try a lower lr" in line
    state = torch.load(tmp_path / "ckpt" / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(w).all() for w in state["model"].values())
    assert not (tmp_path / "model.pt").exists()
    assert len([line for line in logs if "step skipped" in line]) == 3

    # the cause gone, a rerun resumes from the kept checkpoint and finishes
    monkeypatch.undo()
    logs = []
    summary = _run(prepared, tmp_path, logs, epochs=4)
    assert summary["resumed_from"] == 1 and (tmp_path / "model.pt").is_file()


def test_a_non_finite_validation_stops_the_training(prepared, tmp_path, monkeypatch):
    real_network_for = train.network_for

    class NanInEval(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x)
            return out if self.training else out * float("nan")

    monkeypatch.setattr(train, "network_for", lambda spec: NanInEval(real_network_for(spec)))
    with pytest.raises(TrainingStopped, match="training stopped in epoch 1: its validation output was not finite; "
                                              "no checkpoint was written yet"):
        _run(prepared, tmp_path, [], epochs=2)
    assert not (tmp_path / "model.pt").exists()


def test_a_stopped_job_ends_with_its_one_line_and_a_non_zero_exit(tmp_path):
    script = ("from skullrecon.runlog import to_file\nfrom skullrecon.train import TrainingStopped\n"
              f"with to_file({str(tmp_path / 'job.log')!r}):\n"
              "    print('epoch 1 done')\n    raise TrainingStopped('unet: training stopped in epoch 2: because')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "unet: training stopped in epoch 2: because"
    log = (tmp_path / "job.log").read_text()
    assert "epoch 1 done" in log and "stopped: unet: training stopped in epoch 2: because" in log
    assert "Traceback" not in log and "Traceback" not in proc.stderr


def test_other_errors_keep_their_traceback_in_the_log(tmp_path):
    with pytest.raises(ValueError):
        with to_file(tmp_path / "job.log"):
            raise ValueError("a bug")
    assert "Traceback" in (tmp_path / "job.log").read_text()


def test_step_problem_names_what_was_not_finite():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    net(torch.ones(1, 2)).sum().backward()
    loss = torch.tensor(0.5)
    assert step_problem(loss, net) is None
    assert step_problem(torch.tensor(float("inf")), net) == "loss (inf)"
    net[1].weight.grad[0, 0] = float("nan")
    assert step_problem(loss, net) == "gradient (first: 1.weight)"
    net[1].weight.grad[0, 0] = 1e30  # finite garbage: its square overflows AdamW's second moment
    assert step_problem(loss, net) == "gradient (first: 1.weight)"


def test_a_refused_step_changes_neither_weights_nor_optimiser():
    net = torch.nn.Conv3d(1, 1, 3, padding=1)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.ones(1, 1, 4, 4, 4, dtype=torch.uint8), torch.ones(1, 1, 4, 4, 4, dtype=torch.uint8)
    with pytest.raises(NonFiniteStep, match="loss"):
        train.train_step(net, opt, lambda logits, target, given: logits.sum() * float("nan"), x, y,
                         torch.device("cpu"), bf16=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not opt.state and all(p.grad is None for p in net.parameters())


class _GarbageWeightGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):
        return w.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, 1e30)


def test_the_bf16_probe_finds_a_wrong_weight_gradient_and_passes_a_right_one():
    def broken(x, w, padding):  # garbage weight gradients in bf16 at a depth of 2, as oneDNN's
        if x.dtype == torch.bfloat16 and x.shape[2] == 2:
            w = _GarbageWeightGradient.apply(w)
        return F.conv3d(x, w, padding=padding)

    def rounded(x, w, padding):  # float32 arithmetic rounded to bf16: what a sound bf16 kernel gives
        return F.conv3d(x.float(), w.float(), padding=padding).to(x.dtype)

    assert bf16_conv_faults(broken) == ["32 channels at 2x4x4: weight gradient",
                                        "16 channels at 2x2x2: weight gradient",
                                        "32 channels at 2x2x8: weight gradient"]
    assert bf16_conv_faults(rounded) == []


def test_bf16_training_on_a_cpu_only_where_the_probe_passes(monkeypatch):
    cpu = torch.device("cpu")
    asked = TrainConfig(bf16=True, cpu_bf16=True)
    assert train.uses_bf16(asked, cpu) == train.cpu_bf16_sound()
    monkeypatch.setattr(train, "cpu_bf16_sound", lambda: False)
    assert not train.uses_bf16(asked, cpu)


def _cpu_flags() -> set[str]:
    try:
        return set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                        if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return set()


@pytest.mark.skipif("avx512_bf16" not in _cpu_flags(), reason="this CPU has no AVX-512 bf16 to run oneDNN's kernels on")
def test_onednn_avx512_bf16_kernels_are_found_unsound():
    """oneDNN's avx512_core_bf16 convolutions (the AMD EPYC's; forced here on any CPU with AVX-512 bf16)
    give wrong weight gradients at a depth of 2: the probe finds it, and such a CPU trains in float32."""
    code = ("from skullrecon.train import bf16_conv_faults, uses_bf16, TrainConfig\nimport torch\n"
            "print(bool(bf16_conv_faults(tries=10)), uses_bf16(TrainConfig(cpu_bf16=True), torch.device('cpu')))")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]
