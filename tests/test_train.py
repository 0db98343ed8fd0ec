"""The trainer: resuming a killed run, determinism, atomic model files, config checks, the MAE task.

Everything runs on the CPU with a two-level UNet at a 32^3 grid, on one intra-op thread (a
loaded 2-core machine makes torch's thread pool very slow for such small tensors).
"""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from skullrecon.datasets import Layout
from skullrecon.masking import MaskConfig
from skullrecon.preprocess import preprocess_split
from skullrecon.synthetic import generate_dataset
from skullrecon.models import build_network
from skullrecon.train import (LossConfig, MaskedSkullDataset, TrainConfig, _loss_fn, dice_score, restored_dice,
                              train_model)

REPO = Path(__file__).resolve().parents[1]
SPEC = {"method": "unet", "arch": "unet", "grid": 32,
        "network": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}
SETTINGS = dict(epochs=6, checkpoint_every=1, val_fraction=0.25, seed=0, bf16=False)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Four synthetic SkullFix training triplets preprocessed to 32^3 (cases/ and healthy/)."""
    root = tmp_path_factory.mktemp("train_data")
    generate_dataset(root / "raw", "skullfix", n_train=4, n_test=1, shape=(48, 48, 40), spacing=(3.5, 3.5, 4.5),
                     seed=2)
    preprocess_split(root / "raw", Layout("training_set", "test_set"), "train", root / "pre", grid=32,
                     log=lambda *_: None)
    return root / "pre"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cases(prepared: Path) -> list[Path]:
    return sorted((prepared / "cases").glob("*.npz"))


def _train(prepared: Path, out: Path, logs: list[str] | None = None, **overrides):
    cfg = TrainConfig(**{**SETTINGS, **overrides})
    return train_model("implant", _cases(prepared), out / "model.pt", SPEC, cfg, out / "ckpt",
                       out / "ckpt" / "history.csv", device="cpu", progress=False,
                       log=(logs.append if logs is not None else lambda *_: None))


def _epochs(history: Path) -> list[int]:
    with open(history, newline="") as fh:
        return [int(r["epoch"]) for r in csv.DictReader(fh)]


def _weights(model: Path) -> dict[str, torch.Tensor]:
    return torch.load(model, map_location="cpu", weights_only=True)["state_dict"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# The training job as its own process, slowed down before every checkpoint so that the test can
# kill it between two epochs (after the epoch's log row, before its checkpoint).
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from skullrecon import train

    pre, out = Path(sys.argv[1]), Path(sys.argv[2])
    original = train._checkpoint
    def slow_checkpoint(*args, **kwargs):
        time.sleep(0.5)
        original(*args, **kwargs)
    train._checkpoint = slow_checkpoint
    cfg = train.TrainConfig(**{settings!r})
    train.train_model("implant", sorted((pre / "cases").glob("*.npz")), out / "model.pt", {spec!r}, cfg,
                      out / "ckpt", out / "ckpt" / "history.csv", device="cpu", progress=False)
""").format(settings=SETTINGS, spec=SPEC)


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except FileNotFoundError:
        return 0


def test_killed_training_resumes_where_it_stopped(prepared, tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(prepared), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    last = out / "ckpt" / "last.pt"
    deadline = time.monotonic() + 120
    try:
        while _checkpoint_epoch(last) < 2:
            assert proc.poll() is None, f"training ended before it could be killed:\n{proc.stdout.read().decode()}"
            assert time.monotonic() < deadline, "no checkpoint at epoch >= 2 within 120 s"
            assert not (out / "model.pt").exists(), "model file written while training was in progress"
            time.sleep(0.05)
        assert not (out / "model.pt").exists(), "model file written while training was in progress"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the training process was not killed (it finished first)"
    killed_at = _checkpoint_epoch(last)
    assert 2 <= killed_at < SETTINGS["epochs"]
    assert not (out / "model.pt").exists()
    assert not [p.name for p in out.iterdir() if p.name != "ckpt"], "a killed run left files beside the model"
    assert _epochs(out / "ckpt" / "history.csv")[:killed_at] == list(range(1, killed_at + 1))

    logs: list[str] = []
    summary = _train(prepared, out, logs)
    resumed = [m for line in logs if (m := re.search(r"resumed from checkpoint (.+) at epoch (\d+)", line))]
    assert resumed, logs
    assert Path(resumed[0].group(1)) == last
    assert int(resumed[0].group(2)) == killed_at == summary["resumed_from"]
    assert _epochs(out / "ckpt" / "history.csv") == list(range(1, SETTINGS["epochs"] + 1))
    assert (out / "model.pt").is_file()
    assert math.isfinite(summary["val_dsc"])

    # an uninterrupted run gives the very same weights: the resumed run lost and repeated nothing
    fresh = _train(prepared, tmp_path / "fresh")
    assert _same(_weights(out / "model.pt"), _weights(tmp_path / "fresh" / "model.pt"))
    assert fresh["val_dsc"] == summary["val_dsc"]

    # a finished run whose model file was lost only rewrites the model, with its validation DSC
    (out / "model.pt").unlink()
    again = _train(prepared, out)
    assert again["resumed_from"] == SETTINGS["epochs"] and again["val_dsc"] == summary["val_dsc"]
    assert _same(_weights(out / "model.pt"), _weights(tmp_path / "fresh" / "model.pt"))
    spec = torch.load(out / "model.pt", map_location="cpu", weights_only=True)["spec"]
    assert spec["val_dsc"] == summary["val_dsc"]


def test_incompatible_checkpoint_is_not_resumed(prepared, tmp_path):
    out = tmp_path / "run"
    _train(prepared, out, epochs=3)
    assert _checkpoint_epoch(out / "ckpt" / "last.pt") == 3

    logs: list[str] = []
    summary = _train(prepared, out, logs, epochs=2, lr=5e-4)  # other settings
    assert summary["resumed_from"] == 0
    assert any("checkpoint was made with other settings" in line for line in logs), logs
    assert not any("resumed from" in line for line in logs)
    assert _epochs(out / "ckpt" / "history.csv") == [1, 2]

    logs.clear()
    summary = _train(prepared, out, logs, epochs=1, lr=5e-4)  # fewer epochs than the checkpoint has
    assert summary["resumed_from"] == 0
    assert any("beyond the 1 epochs" in line for line in logs), logs
    assert _epochs(out / "ckpt" / "history.csv") == [1]

    logs.clear()
    summary = _train(prepared, out, logs, epochs=3, lr=5e-4)  # more epochs: continues
    assert summary["resumed_from"] == 1
    assert _epochs(out / "ckpt" / "history.csv") == [1, 2, 3]

    (out / "ckpt" / "last.pt").write_bytes(b"not a checkpoint")  # damaged outside the trainer
    logs.clear()
    summary = _train(prepared, out, logs, epochs=2, lr=5e-4)
    assert summary["resumed_from"] == 0
    assert any("unreadable checkpoint" in line for line in logs), logs
    assert _epochs(out / "ckpt" / "history.csv") == [1, 2]


def test_same_seed_gives_identical_weights(prepared, tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        _train(prepared, tmp_path / name, epochs=2, seed=seed)
    a, b, c = (_weights(tmp_path / n / "model.pt") for n in "abc")
    assert _same(a, b)
    assert not _same(a, c)


def test_model_file_is_written_atomically(tmp_path, monkeypatch):
    """A failure while the model is being written leaves neither the model nor a partial file."""
    from skullrecon.models import build_network, save_model

    net = build_network("unet", SPEC["network"], 32)

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(tmp_path / "model.pt", net, SPEC)
    assert list(tmp_path.iterdir()) == []


def test_train_config_rejects_unknown_keys():
    assert TrainConfig.from_dict({"epochs": 3, "lr": 0.01}) == TrainConfig(epochs=3, lr=0.01)
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['epoch', 'learning_rate'\]"):
        TrainConfig.from_dict({"epoch": 3, "learning_rate": 0.01})


def test_mae_trains_on_masked_healthy_skulls(prepared, tmp_path):
    healthy = sorted((prepared / "healthy").glob("*.npz"))
    assert len(healthy) == 4
    mask_cfg = MaskConfig(n_patches=(1, 2), patch_size_mm=(20.0, 50.0))

    # what it trains on: the masked skull is the whole skull minus some bone
    ds = MaskedSkullDataset(healthy, mask_cfg, seed=0)
    x, y = ds[0]
    assert x.shape == y.shape == (1, 32, 32, 32)
    assert bool((x <= y).all()) and 0 < float((y - x).sum()) < float(y.sum())

    torch.set_num_threads(2)  # the masking sets one thread while it runs; the trainer must restore it
    out = tmp_path / "mae"
    summary = train_model("reconstruct", healthy, out / "model.pt", {**SPEC, "method": "mae_d"},
                          TrainConfig(**{**SETTINGS, "epochs": 2}), out / "ckpt", out / "ckpt" / "history.csv",
                          mask_cfg=mask_cfg, device="cpu", progress=False, log=lambda *_: None)
    assert torch.get_num_threads() == 2
    assert math.isfinite(summary["val_dsc"]) and 0 <= summary["val_dsc"] <= 1
    with open(out / "ckpt" / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["val_dsc"])) and math.isfinite(float(r["train_loss"])) for r in rows)
    # the last row logs the final network's DSCs on the held-out case, whole skull and restored bone.
    # Not which is larger: that depends on what two epochs reached, so on the CPU's floating point
    # (an empty prediction scores 0 in both)
    blob = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    spec, net = blob["spec"], build_network("unet", SPEC["network"], 32)
    net.load_state_dict(blob["state_dict"])
    net.eval()
    val = [f for f in healthy if f.stem not in spec["train_cases"]]
    x, y = (v[None].float() for v in MaskedSkullDataset(val, mask_cfg, seed=SETTINGS["seed"] + 1, fixed=True)[0])
    with torch.no_grad():
        logits = net(x)
    assert float(rows[-1]["val_dsc"]) == pytest.approx(float(dice_score(logits, y)), abs=1e-6)
    assert float(rows[-1]["val_restored_dsc"]) == pytest.approx(float(restored_dice(logits, x, y)), abs=1e-6)
    assert spec["task"] == "reconstruct" and spec["masking"]["patch_size_mm"] == (20.0, 50.0)
    assert len(spec["train_cases"]) == 3  # one of four held out for validation

    with pytest.raises(ValueError, match="mask configuration"):
        train_model("reconstruct", healthy, out / "x.pt", SPEC, TrainConfig(epochs=1), out / "c2", out / "c2.csv",
                    device="cpu", progress=False)


def test_worker_processes_give_the_same_training(prepared, tmp_path):
    """Persistent workers (epoch carried by the sampler, uint8 hand-over) train exactly like the
    main process: the masks of every epoch are the same, so are the weights."""
    healthy = sorted((prepared / "healthy").glob("*.npz"))
    mask_cfg = MaskConfig(n_patches=(1, 2), patch_size_mm=(20.0, 50.0))
    weights = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        train_model("reconstruct", healthy, out / "model.pt", {**SPEC, "method": "mae_d"},
                    TrainConfig(**{**SETTINGS, "epochs": 3, "num_workers": workers}), out / "ckpt",
                    out / "ckpt" / "history.csv", mask_cfg=mask_cfg, device="cpu", progress=False,
                    log=lambda *_: None)
        weights.append(_weights(out / "model.pt"))
    assert _same(*weights)
    # and the masks do change from epoch to epoch (a stale epoch in the workers would repeat them)
    ds = MaskedSkullDataset(healthy, mask_cfg, seed=0)
    assert not torch.equal(ds[0, 0][0], ds[1, 0][0])


def test_epoch_sampler_keeps_the_order_of_a_shuffling_dataloader():
    """Persistent workers did not change which case comes when: same order as before, per epoch."""
    from torch.utils.data import DataLoader

    from skullrecon.train import EpochSampler

    sampler = EpochSampler(11, seed=3)
    for epoch in (0, 1, 7):
        sampler.epoch = epoch
        before = DataLoader(list(range(11)), batch_size=None, shuffle=True,
                            generator=torch.Generator().manual_seed(3 * 100_003 + epoch))
        assert [i for _, i in sampler] == [int(i) for i in before]
        assert {e for e, _ in sampler} == {epoch}


def _blobs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 'skull' slab, a mask over part of it, and the masked input (1, 1, 16, 16, 16)."""
    skull = torch.zeros(1, 1, 16, 16, 16)
    skull[..., 6:10, :, :] = 1
    mask = torch.zeros_like(skull)
    mask[..., 4:12, 2:6, 2:6] = 1
    return skull, mask, skull * (1 - mask)


def test_restored_dice_scores_the_bone_put_back():
    skull, mask, masked = _blobs()
    logit = lambda a: a * 20 - 10  # noqa: E731 - binary volume -> confident logits
    assert float(restored_dice(logit(masked), masked, skull)) == 0.0  # copying the input restores nothing
    assert float(restored_dice(logit(skull), masked, skull)) == 1.0
    half = skull.clone()
    half[..., 6:10, 2:4, 2:6] = 0  # half of the removed bone put back
    assert abs(float(restored_dice(logit(half), masked, skull)) - 2 * 32 / (32 + 64)) < 1e-6


def test_region_loss_sees_the_patches_whole_loss_barely_does():
    skull, mask, masked = _blobs()
    logit = lambda a: a * 20 - 10  # noqa: E731
    target = torch.cat([skull, mask], dim=1)
    whole = _loss_fn(LossConfig(whole=1.0, region=0.0))
    region = _loss_fn(LossConfig(whole=0.0, region=1.0))
    both = _loss_fn(LossConfig(whole=1.0, region=1.0))
    copy, perfect = logit(masked), logit(skull)
    assert float(whole(copy, target)) < 0.1  # copying the input already scores well on the whole skull
    assert float(region(copy, target)) > 0.95  # ...but reconstructs nothing of the patches
    assert float(region(perfect, target)) < 1e-3
    wrong_outside = logit(torch.clamp(skull + (1 - mask) * (torch.rand_like(skull) > 0.5).float(), max=1))
    assert float(region(wrong_outside, target)) < 1e-3 < float(whole(wrong_outside, target))
    assert abs(float(both(copy, target)) - float(whole(copy, target)) - float(region(copy, target))) < 1e-5
    # a one-channel target (the baselines) is plain soft Dice
    assert abs(float(whole(copy, skull)) - float(whole(copy, target))) < 1e-6
    with pytest.raises(ValueError, match="loss weights"):
        LossConfig(whole=0.0, region=0.0)
    with pytest.raises(ValueError, match=r"unknown loss setting\(s\) \['patch'\]"):
        LossConfig.from_dict({"patch": 1.0})


@pytest.mark.parametrize("weights", [{"whole": 1.0, "region": 1.0}, {"whole": 0.0, "added": 1.0, "region_ce": 1.0}])
def test_mae_with_region_loss_trains_and_gets_the_mask_channel(prepared, tmp_path, weights):
    healthy = sorted((prepared / "healthy").glob("*.npz"))
    mask_cfg = MaskConfig(n_patches=(1, 2), patch_size_mm=(20.0, 50.0))
    x, y = MaskedSkullDataset(healthy, mask_cfg, seed=0, with_mask=True)[0]
    assert y.shape == (2, 32, 32, 32)
    assert bool((x[0] == y[0] * (1 - y[1])).all()) and float(y[1].sum()) > 0  # input = skull minus mask
    out = tmp_path / "mae"
    summary = train_model("reconstruct", healthy, out / "model.pt", {**SPEC, "method": "mae_d"},
                          TrainConfig(**{**SETTINGS, "epochs": 1}), out / "ckpt", out / "ckpt" / "history.csv",
                          mask_cfg=mask_cfg, device="cpu", progress=False, log=lambda *_: None,
                          loss=LossConfig(**weights))
    assert math.isfinite(summary["val_dsc"])
    spec = torch.load(out / "model.pt", map_location="cpu", weights_only=True)["spec"]
    assert spec["loss"] == {"region": 0.0, **weights}


def test_cosine_schedule_warms_up_then_decays_to_near_zero():
    from skullrecon.train import cosine_factor

    f = [cosine_factor(e, 10, 2) for e in range(10)]
    assert f[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(a > b for a, b in zip(f[2:], f[3:])) and 0 < f[-1] < 0.05
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="coarse_epochs"):
        TrainConfig(epochs=5, coarse_epochs=5)


def test_halved_grid_is_the_area_average_thresholded_at_one_half():
    from skullrecon.train import halve_grid

    rng = np.random.default_rng(0)
    skull = rng.random((8, 6, 10)) < 0.5
    coarse = halve_grid(skull)
    expected = torch.nn.functional.avg_pool3d(torch.from_numpy(skull).float()[None, None], 2)[0, 0] >= 0.5
    assert coarse.dtype == bool and coarse.shape == (4, 3, 5)
    assert np.array_equal(coarse, expected.numpy())


def test_coarse_epochs_train_on_half_the_grid_and_validate_on_the_whole(prepared):
    healthy = sorted((prepared / "healthy").glob("*.npz"))
    mask_cfg = MaskConfig(n_patches=(1, 2), patch_size_mm=(20.0, 50.0))
    ds = MaskedSkullDataset(healthy, mask_cfg, seed=0, coarse_epochs=2)
    for epoch, size in ((0, 16), (1, 16), (2, 32)):
        x, y = ds[epoch, 0]
        assert x.shape == y.shape == (1, size, size, size)
        assert bool((x <= y).all()) and 0 < float((y - x).sum()) < float(y.sum())
    fixed = MaskedSkullDataset(healthy, mask_cfg, seed=1, fixed=True, coarse_epochs=2)
    assert fixed[0, 0][0].shape == (1, 32, 32, 32)


def test_crop_window_is_centred_on_a_target_voxel_and_moved_inside_the_grid():
    from skullrecon.train import crop_window

    target = np.zeros((20, 20, 20), bool)
    target[18, 1, 10] = True  # near two faces: the window moves inside
    assert crop_window(target, 8, np.random.default_rng(0)) == (slice(12, 20), slice(0, 8), slice(6, 14))
    target[:] = False
    target[10, 10, 10] = True
    assert crop_window(target, 8, np.random.default_rng(0)) == (slice(6, 14),) * 3
    assert crop_window(np.zeros((20, 20, 20), bool), 8, np.random.default_rng(0)) == (slice(6, 14),) * 3
    assert all(w.stop - w.start == 24 for w in crop_window(target, 24, np.random.default_rng(0)))  # numpy clips


def test_crop_trains_on_windows_around_removed_bone_and_validates_on_the_whole_grid(prepared, tmp_path):
    from skullrecon.train import PairDataset

    healthy = sorted((prepared / "healthy").glob("*.npz"))
    mask_cfg = MaskConfig(n_patches=(1, 2), patch_size_mm=(20.0, 50.0))
    whole = MaskedSkullDataset(healthy, mask_cfg, seed=0, with_mask=True)
    cropped = MaskedSkullDataset(healthy, mask_cfg, seed=0, with_mask=True, crop=16)
    for epoch in range(3):
        (x, y), (xc, yc) = whole[epoch, 0], cropped[epoch, 0]
        assert xc.shape == (1, 16, 16, 16) and yc.shape == (2, 16, 16, 16)
        assert float((yc[0] * yc[1]).sum()) > 0  # removed bone in every window
        assert float((yc[0] - xc[0]).sum()) > 0
        # the same masks as the whole grid's, cut out of it
        found = [w for w in np.ndindex(17, 17, 17)
                 if torch.equal(x[:, w[0]:w[0] + 16, w[1]:w[1] + 16, w[2]:w[2] + 16], xc)
                 and torch.equal(y[:, w[0]:w[0] + 16, w[1]:w[1] + 16, w[2]:w[2] + 16], yc)]
        assert found
    pairs = sorted((prepared / "cases").glob("*.npz"))
    d, i = PairDataset(pairs, crop=16, seed=0)[0, 0]
    assert d.shape == i.shape == (1, 16, 16, 16) and float(i.sum()) > 0
    out = tmp_path / "mae"
    summary = train_model("reconstruct", healthy, out / "model.pt", {**SPEC, "method": "mae_d"},
                          TrainConfig(**{**SETTINGS, "epochs": 1, "crop": 16}), out / "ckpt",
                          out / "ckpt" / "history.csv", mask_cfg=mask_cfg, device="cpu", progress=False,
                          log=lambda *_: None, loss=LossConfig(whole=0.0, added=1.0))
    assert math.isfinite(summary["val_dsc"])  # validated on whole 32^3 grids
    rows = list(csv.DictReader((out / "ckpt" / "history.csv").open()))
    assert len(rows) == 1 and math.isfinite(float(rows[0]["val_restored_dsc"]))


def test_ema_weights_are_validated_saved_and_resumed(prepared, tmp_path):
    """With ``ema`` the saved network is the average, not the last step; a killed-and-resumed run
    (here: shorter run continued) ends with the same averaged weights as an uninterrupted one."""
    healthy = sorted((prepared / "healthy").glob("*.npz"))
    mask_cfg = MaskConfig(n_patches=(1, 2), patch_size_mm=(20.0, 50.0))
    spec = {**SPEC, "method": "mae_d"}

    def run(out: Path, epochs: int, **kw) -> dict:
        cfg = TrainConfig(**{**SETTINGS, "epochs": epochs, "ema": 0.9, "coarse_epochs": 1, **kw})
        train_model("reconstruct", healthy, out / "model.pt", spec, cfg, out / "ckpt", out / "ckpt" / "history.csv",
                    mask_cfg=mask_cfg, device="cpu", progress=False, log=lambda *_: None)
        return _weights(out / "model.pt")

    averaged = run(tmp_path / "a", 3)
    plain = run(tmp_path / "b", 3, ema=0.0)
    assert not _same(averaged, plain)
    last = torch.load(tmp_path / "a" / "ckpt" / "last.pt", map_location="cpu", weights_only=True)
    assert _same(averaged, {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")})
    run(tmp_path / "c", 2)  # stopped after two epochs, then continued to three
    assert _same(run(tmp_path / "c", 3), averaged)
    with open(tmp_path / "a" / "ckpt" / "history.csv", newline="") as fh:
        assert all(float(r["cpu_seconds"]) > 0 for r in csv.DictReader(fh))


def test_bf16_on_a_cpu_only_when_asked():
    from skullrecon.train import cpu_bf16_sound, uses_bf16

    cpu = torch.device("cpu")
    assert not uses_bf16(TrainConfig(bf16=True), cpu)  # the default: float32 on CPUs, as before
    assert not uses_bf16(TrainConfig(bf16=False, cpu_bf16=True), cpu)
    # asked for: where oneDNN has native bf16 and its convolutions agree with float32 (tests/test_train_guard.py)
    assert uses_bf16(TrainConfig(bf16=True, cpu_bf16=True), cpu) == cpu_bf16_sound()
    assert not cpu_bf16_sound() or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def test_channels_last_only_for_float32_cpu_training():
    from skullrecon.train import uses_channels_last

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert uses_channels_last(TrainConfig(cpu_channels_last=True), cpu, bf16=False)
    assert not uses_channels_last(TrainConfig(cpu_channels_last=True), cpu, bf16=True)  # slower in bf16
    assert not uses_channels_last(TrainConfig(cpu_channels_last=True), gpu, bf16=False)
    assert not uses_channels_last(TrainConfig(), cpu, bf16=False)  # the default: as before


def test_a_channels_last_step_computes_what_the_default_layout_does():
    """Only the memory layout changes: one step from the same weights on the same batch gives the
    same loss and the same gradients, up to float32 rounding (compared before AdamW, whose first
    step is about lr times the gradient's sign, and so flips with the rounding of a near-zero one)."""
    from skullrecon.train import train_step

    torch.manual_seed(0)
    x = (torch.rand(2, 1, 32, 32, 32) > 0.7).float()
    y = torch.maximum(x, (torch.rand(2, 1, 32, 32, 32) > 0.9).float())
    weights = build_network("unet", SPEC["network"], 32).state_dict()
    after = []
    for channels_last in (False, True):
        net = build_network("unet", SPEC["network"], 32)
        net.load_state_dict(weights)
        if channels_last:
            net = net.to(memory_format=torch.channels_last_3d)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        loss = train_step(net, opt, _loss_fn(LossConfig()), x, y, torch.device("cpu"), False, channels_last)
        after.append((float(loss), {k: p.grad.contiguous() for k, p in net.named_parameters()}))
    assert after[0][0] == pytest.approx(after[1][0], abs=1e-5)
    scale = max(float(g.abs().max()) for g in after[0][1].values())  # a bias before a norm has ~0 gradient
    for k, grad in after[0][1].items():
        torch.testing.assert_close(after[1][1][k], grad, rtol=1e-3, atol=1e-4 * scale)


def test_a_channels_last_run_saves_the_default_layout(prepared, tmp_path):
    _train(prepared, tmp_path, epochs=1, cpu_channels_last=True)
    assert all(v.is_contiguous() for v in _weights(tmp_path / "model.pt").values())


def test_checkpoints_of_earlier_versions_still_resume():
    """Settings added later enter the fingerprint only when used: a default config fingerprints as
    it did before they existed (the value below is the earlier code's)."""
    import hashlib
    import json
    from dataclasses import asdict

    from skullrecon.train import _LATER_SETTINGS, _fingerprint

    cfg = TrainConfig(epochs=7)
    files = [Path("a.npz"), Path("b.npz")]
    earlier = {k: v for k, v in asdict(cfg).items()
               if k not in ("epochs", "checkpoint_every", "num_workers") and k not in _LATER_SETTINGS}
    blob = json.dumps({"spec": SPEC, "cfg": earlier, "files": ["a.npz", "b.npz"]}, sort_keys=True, default=str)
    assert _fingerprint(SPEC, cfg, files) == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert _fingerprint(SPEC, TrainConfig(epochs=8), files) == _fingerprint(SPEC, cfg, files)
    cosine = TrainConfig(epochs=7, schedule="cosine")
    assert _fingerprint(SPEC, cosine, files) != _fingerprint(SPEC, TrainConfig(epochs=8, schedule="cosine"), files)


def test_added_loss_scores_the_bone_the_input_lacks_and_the_output_keeps_the_input():
    from skullrecon.models import KeepInput

    skull, mask, masked = _blobs()
    logit = lambda a: a * 20 - 10  # noqa: E731
    added = _loss_fn(LossConfig(whole=0.0, added=1.0))
    assert float(added(logit(masked), skull, masked)) > 0.95  # copying adds nothing
    assert float(added(logit(skull), skull, masked)) < 1e-2
    assert float(added(logit(skull - masked), skull, masked)) < 1e-2  # only the added bone counts
    stray = logit(torch.clamp(skull + (torch.rand_like(skull) > 0.9).float(), max=1))
    assert float(added(stray, skull, masked)) > 0.1  # bone added where there is none costs
    assert LossConfig(added=1.0).keeps_input and not LossConfig().keeps_input

    kept = KeepInput(torch.nn.Conv3d(1, 1, 1)).eval()
    with torch.no_grad():
        out, inner = kept(masked), kept.net(masked)
    assert bool((out[masked > 0.5] == KeepInput.KEPT_LOGIT).all())
    assert torch.equal(out[masked < 0.5], inner[masked < 0.5])


def test_added_cross_entropy_is_torch_bce_over_the_voxels_the_input_lacks():
    """``added_ce``: PyTorch's binary cross-entropy averaged over the voxels where the input has no
    bone (the reference: BCE of exactly those voxels), nothing from the input's own bone."""
    skull, mask, masked = _blobs()
    logits = torch.randn_like(skull) * 3
    ce = _loss_fn(LossConfig(whole=0.0, added_ce=1.0))
    free = masked < 0.5
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[free], skull[free])
    assert float(ce(logits, skull, masked)) == pytest.approx(float(expected), rel=1e-5)
    moved = logits.clone()
    moved[~free] = -50.0  # the input's own bone is kept by the network, whatever these logits say
    assert float(ce(moved, skull, masked)) == pytest.approx(float(expected), rel=1e-5)
    both = _loss_fn(LossConfig(whole=0.0, added=1.0, added_ce=0.5))
    dice = _loss_fn(LossConfig(whole=0.0, added=1.0))
    expected_both = float(dice(logits, skull, masked)) + 0.5 * float(expected)
    assert float(both(logits, skull, masked)) == pytest.approx(expected_both, rel=1e-5)
    assert LossConfig(whole=0.0, added_ce=1.0).keeps_input
    assert LossConfig(added=1.0).as_spec() == {"whole": 1.0, "region": 0.0, "added": 1.0}  # as files made before it


def test_region_cross_entropy_is_torch_bce_inside_the_removed_patches():
    """``region_ce``: PyTorch's binary cross-entropy averaged over the removed patches only; the
    trainer hands it the mask channel, as it does for ``region``."""
    skull, mask, masked = _blobs()
    logits = torch.randn_like(skull) * 3
    ce = _loss_fn(LossConfig(whole=0.0, region_ce=1.0))
    inside = mask > 0.5
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[inside], skull[inside])
    target = torch.cat([skull, mask], dim=1)
    assert float(ce(logits, target, masked)) == pytest.approx(float(expected), rel=1e-5)
    moved = logits.clone()
    moved[~inside] = 50.0  # outside the patches nothing counts
    assert float(ce(moved, target, masked)) == pytest.approx(float(expected), rel=1e-5)
    assert LossConfig(region_ce=1.0).needs_mask and not LossConfig(region_ce=1.0).keeps_input
    assert LossConfig(added=1.0, region_ce=0.5).as_spec() == {"whole": 1.0, "region": 0.0, "added": 1.0,
                                                              "region_ce": 0.5}


def test_mae_trained_to_add_bone_saves_a_network_that_keeps_its_input(prepared, tmp_path):
    from skullrecon.models import KeepInput, load_model

    healthy = sorted((prepared / "healthy").glob("*.npz"))
    out = tmp_path / "mae"
    train_model("reconstruct", healthy, out / "model.pt", {**SPEC, "method": "mae_d", "margin": 0.1},
                TrainConfig(**{**SETTINGS, "epochs": 1}), out / "ckpt", out / "ckpt" / "history.csv",
                mask_cfg=MaskConfig(n_patches=(1, 2), patch_size_mm=(20.0, 50.0)), device="cpu", progress=False,
                log=lambda *_: None, loss=LossConfig(whole=0.0, added=1.0))
    net, spec = load_model(out / "model.pt")
    assert spec["keep_input"] and isinstance(net, KeepInput)
    x = MaskedSkullDataset(healthy, MaskConfig(), seed=0)[0][0][None].float()
    with torch.no_grad():
        assert bool((torch.sigmoid(net(x))[x > 0.5] == 1).all())


def test_command_line_overrides_reach_nested_settings():
    from skullrecon.settings import apply_override

    cfg = {"mae": {"train": {"epochs": 60}}}
    apply_override(cfg, "mae.train.epochs=150")
    apply_override(cfg, "mae.loss={whole: 0, added: 1}")
    apply_override(cfg, "baselines.train.lr=1.0e-2")
    assert cfg == {"mae": {"train": {"epochs": 150}, "loss": {"whole": 0, "added": 1}},
                   "baselines": {"train": {"lr": 0.01}}}


def test_validation_split_keeps_each_skull_whole():
    """The five SkullBreak kinds of one skull fall on one side of the trainer's validation split, and a
    dataset of one case per skull is split as it was before by case (the draw of the earlier releases)."""
    from skullrecon.train import _split

    kinds = ["bilateral", "frontoorbital", "parietotemporal", "random_1", "random_2"]
    files = [Path("pre/train/cases") / f"{k}_{i:03d}.npz" for i in range(20) for k in kinds]
    train, val = _split(files, 0.1, seed=0)
    skulls = lambda fs: {f.stem.rsplit("_", 1)[-1] for f in fs}  # noqa: E731
    assert len(skulls(val)) == 2 and len(val) == 10 and not skulls(train) & skulls(val)
    assert sorted(train + val) == sorted(files)

    single = sorted(Path("pre/train/cases") / f"{i:03d}.npz" for i in range(45))
    order = np.random.default_rng(0).permutation(45)[:round(4.5)]  # the split by case: 4 of 45 drawn
    assert _split(single, 0.1, seed=0)[1] == [single[i] for i in sorted(order)]
