"""Released models: a run's model published with its card, listed, scored again, and refused when altered.

Uses the committed test model (tests/data/reconstruct-unet.pt, a tiny SkullBreak-like implant
UNet) as a finished run's baseline model; ``skullrecon evaluate`` of it writes the run's per-case
metrics, so the card's numbers and a later evaluation must agree exactly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from skullrecon.cli import main
from skullrecon.evaluate import evaluate_model, summary_rows
from skullrecon.release import DEFAULT_MODEL, release_from_run, resolve_model

DATA = Path(__file__).resolve().parent / "data"
_spec = importlib.util.spec_from_file_location("make_reconstruct_model", DATA / "make_reconstruct_model.py")
made = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(made)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A fake finished run holding the test model as its UNet, published into a models folder."""
    tmp = tmp_path_factory.mktemp("release")
    data = made.make_data(tmp / "data") / "training"  # four skulls with implants: cases for two workers
    run = tmp / "results" / "fake"
    (run / "models").mkdir(parents=True)
    shutil.copyfile(made.MODEL, run / "models" / "unet_skullbreak.pt")
    evaluate_model(made.MODEL, None, data, out_csv=run / "metrics" / "skullbreak" / "unet.csv", workers=1,
                   progress=False)
    per_case = pd.read_csv(run / "metrics" / "skullbreak" / "unet.csv")
    per_case["scored_on"] = "the test folder 'training'"
    per_case.to_csv(run / "metrics" / "skullbreak" / "unet.csv", index=False)
    (run / "training").mkdir()
    # a baseline's log has val_restored_dsc too (equal to val_dsc); its card names val_dsc
    pd.DataFrame({"epoch": [1, 2, 3], "val_dsc": [0.1, 0.3, 0.2], "val_restored_dsc": [0.1, 0.3, 0.2]}).to_csv(
        run / "training" / "unet_skullbreak.csv", index=False)
    config = {"run": "fake", "datasets": {"skullbreak": {"source": "data_dir", "data_dir": str(data.parent),
                                                         "layout": {"train": "training", "test": "training"}}},
              "baselines": {"train": {"epochs": 3, "lr": 0.03}}, "mae": {"train": {}}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "env.json").write_text(json.dumps({"git_commit": "0" * 40, "git_dirty": False, "torch": torch.__version__}))
    models = tmp / "models"
    card_path = release_from_run(run, "unet", name="tiny", dataset="skullbreak", out=models,
                                 epochs_chosen="three epochs, for the test")
    return {"data": data, "run": run, "models": models, "card": json.loads(card_path.read_text()), "tmp": tmp}


def test_card_describes_the_file_and_the_run(released):
    card, models = released["card"], released["models"]
    blob = (models / "tiny.pt").read_bytes()
    assert card["sha256"] == hashlib.sha256(blob).hexdigest() and card["file_bytes"] == len(blob)
    # the run's file with a TorchScript copy of the network added: same weights, same spec
    ours, theirs = (torch.load(f, weights_only=True) for f in (models / "tiny.pt", made.MODEL))
    same_spec = json.dumps(ours["spec"], sort_keys=True, default=str) == json.dumps(theirs["spec"], sort_keys=True, default=str)
    assert same_spec and ours["state_dict"].keys() == theirs["state_dict"].keys()
    assert all(torch.equal(ours["state_dict"][k], v) for k, v in theirs["state_dict"].items())
    assert card["torchscript"] and isinstance(ours["script"], bytes)
    state = torch.load(made.MODEL, weights_only=True)["state_dict"]
    assert card["parameters"] == sum(v.numel() for v in state.values() if v.is_floating_point())
    assert card["training"]["commit"] == "0" * 40 and card["training"]["train"] == {"epochs": 3, "lr": 0.03}
    assert card["training"]["epochs"] == {"trained": 3, "last_validation": "val_dsc", "last_validation_value": 0.2,
                                          "best_validation_value": 0.3, "best_validation_epoch": 2}
    assert "CC BY-NC-SA" in card["licence"]
    text = (models / "tiny.md").read_text()
    assert card["sha256"] in text and "three epochs, for the test" in text and "CC BY-NC-SA" in text
    per_case = pd.read_csv(released["run"] / "metrics" / "skullbreak" / "unet.csv")
    assert card["metrics"]["test"]["cases"] == len(per_case) == 4
    assert card["metrics"]["test"]["dsc_mean"] == pytest.approx(per_case["dsc"].mean(), abs=0)


def test_evaluate_by_name_reproduces_the_card_exactly(released, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SKULLRECON_MODELS", str(released["models"]))
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--model", "tiny", "--data", str(released["data"]), "--out", str(out), "--workers", "2",
                 "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key, value in released["card"]["metrics"]["test"].items():
        if key in summary and not isinstance(value, list):  # a card's per-case rows: evaluate writes a file
            assert summary[key] == value, key
    again = pd.read_csv(out, dtype={"case": str})
    run = pd.read_csv(released["run"] / "metrics" / "skullbreak" / "unet.csv", dtype={"case": str})
    pd.testing.assert_frame_equal(again, run.drop(columns="scored_on"))


def test_evaluate_only_the_given_ids(released):
    table = evaluate_model(made.MODEL, None, released["data"], ids=["1"], workers=1, progress=False)
    assert list(table["case"]) == ["bilateral_001"]
    assert summary_rows(table)["cases"] == 1


def test_models_lists_the_release(released, monkeypatch, capsys):
    monkeypatch.setenv("SKULLRECON_MODELS", str(released["models"]))
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "tiny" in text and released["card"]["sha256"][:12] in text
    assert main(["models", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["test_dsc"] == released["card"]["metrics"]["test"]["dsc_mean"]


def test_altered_bytes_are_refused_with_one_line(released, tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    shutil.copytree(released["models"], models)
    blob = bytearray((models / "tiny.pt").read_bytes())
    blob[len(blob) // 2] ^= 1  # one bit, inside the weights: torch would load it without complaint
    (models / "tiny.pt").write_bytes(bytes(blob))
    monkeypatch.setenv("SKULLRECON_MODELS", str(models))
    defective = released["data"] / "defective_skull" / "bilateral" / "000.nrrd"
    for argv in (["reconstruct", str(defective), "--model", "tiny", "--out", str(tmp_path / "out")],
                 ["reconstruct", str(defective), "--model", str(models / "tiny.pt"), "--out", str(tmp_path / "out")],
                 ["evaluate", "--model", "tiny", "--data", str(released["data"]), "--out", str(tmp_path / "s.csv")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(models / "tiny.pt") in err and "SHA-256" in err, err
    assert not (tmp_path / "out" / "implant.nrrd").exists() and not (tmp_path / "s.csv").exists()


def test_reconstruct_uses_the_default_release(released, tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    shutil.copytree(released["models"], models)
    name = DEFAULT_MODEL
    for suffix in (".pt", ".json", ".md"):
        (models / f"tiny{suffix}").rename(models / f"{name}{suffix}")
    card = json.loads((models / f"{name}.json").read_text())
    (models / f"{name}.json").write_text(json.dumps({**card, "name": name, "file": f"{name}.pt"}))
    monkeypatch.setenv("SKULLRECON_MODELS", str(models))
    assert resolve_model(None) == (models / f"{name}.pt", card["sha256"])
    defective = released["data"] / "defective_skull" / "bilateral" / "000.nrrd"
    assert main(["reconstruct", str(defective), "--out", str(tmp_path / "out"), "--no-stl"]) in (0, 3)
    assert (tmp_path / "out" / "implant.nrrd").is_file()


def test_no_release_and_unknown_names_are_clear_errors(released, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SKULLRECON_MODELS", str(tmp_path / "none"))
    defective = released["data"] / "defective_skull" / "bilateral" / "000.nrrd"
    assert main(["reconstruct", str(defective), "--out", str(tmp_path / "out")]) == 2
    assert "--model" in capsys.readouterr().err
    monkeypatch.setenv("SKULLRECON_MODELS", str(released["models"]))
    assert main(["evaluate", "--model", "nope", "--data", str(released["data"]), "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "tiny" in err and err.count("\n") == 1
    assert main(["evaluate", "--model", "tiny", "--data", str(tmp_path), "--out", str(tmp_path / "s.csv")]) == 2
    assert "defective_skull" in capsys.readouterr().err


def test_release_of_an_unfinished_run_names_the_missing_file(released, tmp_path):
    with pytest.raises(FileNotFoundError, match="mae_d.pt"):
        release_from_run(released["run"], "mae_d", out=tmp_path)


def test_a_released_model_loads_its_torchscript_with_the_same_output(released):
    """With the card's checksum on a CPU the TorchScript copy is used (no MONAI import); it gives
    the MONAI network's logits bit for bit. Without a checksum the MONAI network is rebuilt."""
    from skullrecon.models import load_model

    path, sha = released["models"] / "tiny.pt", released["card"]["sha256"]
    fast, spec = load_model(path, sha256=sha, need_postprocess=True)
    slow, _ = load_model(path)
    assert isinstance(fast, torch.jit.ScriptModule) and not isinstance(slow, torch.jit.ScriptModule)
    g = spec["grid"]
    x = (torch.rand(2, 1, g, g, g, generator=torch.Generator().manual_seed(0)) > 0.8).float()
    with torch.no_grad():
        assert torch.equal(fast(x), slow(x))


def test_a_released_file_holds_no_path_of_the_machine_that_made_it(released):
    """TorchScript's debug records name the source files it was traced from by absolute path; a
    release drops them (the repository must not carry a path of its maker's machine)."""
    import io
    import zipfile

    import skullrecon.models

    blob = torch.load(released["models"] / "tiny.pt", weights_only=True)
    with zipfile.ZipFile(io.BytesIO(blob["script"])) as archive:
        names = archive.namelist()
        contents = b"".join(archive.read(n) for n in names)
    source_dir = str(Path(skullrecon.models.__file__).resolve().parent).encode()
    assert not [n for n in names if n.endswith(".debug_pkl")]
    assert source_dir not in contents and b"site-packages" not in contents


def test_a_release_is_a_runs_mae_only_where_it_learned_from_the_same_skulls(tmp_path):
    """mae.released: the released network, unchanged, as the run's; refused in one line when the release held out
    other test skulls than the run scores (it could have trained on one of them) or was made on another grid."""
    import torch
    import yaml

    from skullrecon.models import load_model
    from skullrecon.release import network_from_release

    repo = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((repo / "realdata" / "run-skullbreaklike.yaml").read_text())
    line = network_from_release("mae_d", tmp_path / "mae_d.pt", cfg)
    assert line.startswith("mae_d: mae_d.pt (SHA-256 ")
    ours, spec = load_model(tmp_path / "mae_d.pt")
    theirs, _ = load_model(repo / "models" / "mae_d.pt")
    x = (torch.rand(1, 1, 64, 64, 64) > 0.7).float()
    assert "postprocess" not in spec and torch.equal(ours(x), theirs(x))  # bundle_model adds the run's own

    cfg["datasets"]["skullfix"]["layout"]["test_ids"] = [1, 2]
    cfg["preprocess"]["grid"] = 96
    with pytest.raises(ValueError, match=r"mae_d\.json: release 'mae_d' does not fit this run: grid 64, the run has 96; "
                                         r"held-out test skulls of skullfix \['000'"):
        network_from_release("mae_d", tmp_path / "x.pt", cfg)
    assert not (tmp_path / "x.pt").exists()


def _refiner(path: Path, coarse_grid: int) -> Path:
    """An untrained second stage for a ``coarse_grid`` first stage (seeded: the same file on every machine)."""
    from skullrecon.models import network_for, save_model
    from skullrecon.refine import RefineConfig, network_spec

    torch.manual_seed(0)
    spec = network_spec(RefineConfig(grid=2 * coarse_grid, coarse_grid=coarse_grid, crop=32, roi_margin_mm=6.0),
                        {"channels": [4, 8], "strides": [2]}, 0.1)
    return save_model(path, network_for(spec), spec)


def test_a_two_stage_release_carries_both_networks_and_evaluate_reproduces_it(released, tmp_path, monkeypatch,
                                                                               capsys):
    from skullrecon.release import release_refined, resolve_refiner

    models = tmp_path / "models"
    shutil.copytree(released["models"], models)
    monkeypatch.setenv("SKULLRECON_MODELS", str(models))
    grid = torch.load(models / "tiny.pt", map_location="cpu", weights_only=True)["spec"]["grid"]
    refiner = _refiner(tmp_path / "refiner.pt", grid)
    scores = tmp_path / "two_stage.csv"
    evaluate_model(models / "tiny.pt", None, released["data"], out_csv=scores, workers=1, progress=False,
                   refiner=(refiner, None))
    card = json.loads(release_refined("tiny", refiner, "tiny_refined", scores, training={"data": "none: a test"},
                                      out=models).read_text())
    assert card["file"] == "tiny.pt" and card["refiner"]["file"] == "refiner.pt"  # the first stage's file, unchanged
    assert card["single_stage"]["metrics"] == released["card"]["metrics"]
    assert card["refiner"]["sha256"] in (models / "tiny_refined.md").read_text()
    assert resolve_refiner("tiny_refined") == (models / "refiner.pt", card["refiner"]["sha256"])
    assert resolve_refiner("tiny") is None and resolve_refiner("tiny_refined", "none") is None
    # another first stage with the released second stage: the same file, its TorchScript copy not traced again
    shutil.copy(models / "tiny.json", models / "tiny2.json")
    again = json.loads(release_refined("tiny2", models / "refiner.pt", "tiny2_refined", scores, out=models).read_text())
    assert again["refiner"]["sha256"] == card["refiner"]["sha256"]
    out = tmp_path / "again.csv"
    assert main(["evaluate", "--model", "tiny_refined", "--data", str(released["data"]), "--out", str(out),
                 "--workers", "2", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["refiner"] == str(models / "refiner.pt")
    for key, value in card["metrics"]["test"].items():
        if key in summary and not isinstance(value, list):  # a card's per-case rows: evaluate writes a file
            assert summary[key] == value, key
    assert main(["evaluate", "--model", "tiny_refined", "--refiner", "none", "--data", str(released["data"]), "--out",
                 str(out), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["dsc_mean"] == released["card"]["metrics"]["test"]["dsc_mean"]
    blob = bytearray((models / "refiner.pt").read_bytes())
    blob[len(blob) // 2] ^= 1
    (models / "refiner.pt").write_bytes(bytes(blob))
    defective = released["data"] / "defective_skull" / "bilateral" / "000.nrrd"
    assert main(["reconstruct", str(defective), "--model", "tiny_refined", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "refiner.pt" in err and "SHA-256" in err and not (tmp_path / "o" / "implant.nrrd").exists()


def test_a_surface_release_names_its_settings_and_evaluate_reproduces_it(released, tmp_path, monkeypatch, capsys):
    """The surface stage has no file: its card carries the first stage's file and the stage's settings, and
    `evaluate` and `reconstruct` run both stages from the name alone."""
    from skullrecon.release import headline, release_surface, resolve_refiner, resolve_surface
    from skullrecon.surfaces import SurfaceConfig

    models = tmp_path / "models"
    shutil.copytree(released["models"], models)
    monkeypatch.setenv("SKULLRECON_MODELS", str(models))
    settings = SurfaceConfig(margin_deg=3, weight=0.5, step_deg=2.0)
    scores = tmp_path / "surface.csv"
    evaluate_model(models / "tiny.pt", None, released["data"], out_csv=scores, workers=1, progress=False,
                   surface=settings)
    card = json.loads(release_surface("tiny", "tiny_surface", scores, settings={"margin_deg": 3, "step_deg": 2.0},
                                      chosen="for the test", commit="0" * 40, out=models).read_text())
    assert card["file"] == "tiny.pt" and card["surface"]["settings"]["margin_deg"] == 3
    assert card["single_stage"]["metrics"] == released["card"]["metrics"] and "refiner" not in card
    assert "the skull's own surfaces" in (models / "tiny_surface.md").read_text()
    assert headline(card)["method"].endswith("+ surface")
    assert resolve_surface("tiny_surface") == settings and resolve_refiner("tiny_surface") is None
    assert resolve_surface("tiny") is None and resolve_surface("tiny_surface", "none") is None
    assert resolve_surface("tiny", "surface") == SurfaceConfig()
    out = tmp_path / "again.csv"
    assert main(["evaluate", "--model", "tiny_surface", "--data", str(released["data"]), "--out", str(out),
                 "--workers", "2", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["surface"] is True and summary["refiner"] is None
    for key, value in card["metrics"]["test"].items():
        if key in summary and not isinstance(value, list):  # a card's per-case rows: evaluate writes a file
            assert summary[key] == value, key
    defective = released["data"] / "defective_skull" / "bilateral" / "000.nrrd"
    main(["reconstruct", str(defective), "--model", "tiny_surface", "--out", str(tmp_path / "o"), "--no-stl"])
    manifest = json.loads(capsys.readouterr().out)
    assert "surface" in manifest["seconds"] and (tmp_path / "o" / "implant.nrrd").exists()


def test_a_surface_release_with_a_shape_model_carries_it_and_refuses_another_file(released, tmp_path, monkeypatch,
                                                                                  capsys):
    """A surface release whose stage uses a shape model of healthy skulls: the model file beside the card with its
    SHA-256 and skulls, `evaluate` by name reproduces the card, and other bytes under its name are refused."""
    from skullrecon.release import release_surface, resolve_surface
    from skullrecon.shape_model import build_shape_model
    from skullrecon.surfaces import SurfaceConfig

    models = tmp_path / "models"
    shutil.copytree(released["models"], models)
    monkeypatch.setenv("SKULLRECON_MODELS", str(models))
    skulls = sorted((released["data"] / "complete_skull").glob("*.nrrd"))
    built = tmp_path / "shape_model_tiny.npz"
    build_shape_model(skulls, step_deg=4.0, n_modes=2, log=lambda _: None).save(built)
    scores = tmp_path / "surface.csv"
    evaluate_model(models / "tiny.pt", None, released["data"], out_csv=scores, workers=1, progress=False,
                   surface=SurfaceConfig(step_deg=2.0, shape_model=str(built)))
    card = json.loads(release_surface("tiny", "tiny_shape", scores, settings={"step_deg": 2.0}, chosen="for the test",
                                      commit="0" * 40, out=models, shape_model=built,
                                      shape_model_built="for the test").read_text())
    published = models / "shape_model_tiny.npz"
    assert published.read_bytes() == built.read_bytes() and card["surface"]["settings"]["shape_model"] == published.name
    assert card["surface"]["shape_model"]["sha256"] == hashlib.sha256(built.read_bytes()).hexdigest()
    assert card["surface"]["shape_model"]["skulls"] == [p.name for p in skulls]
    assert published.name in (models / "tiny_shape.md").read_text()
    assert resolve_surface("tiny_shape") == SurfaceConfig(step_deg=2.0, shape_model=str(published))
    out = tmp_path / "again.csv"
    assert main(["evaluate", "--model", "tiny_shape", "--data", str(released["data"]), "--out", str(out),
                 "--workers", "2", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key, value in card["metrics"]["test"].items():
        if key in summary and not isinstance(value, list):  # a card's per-case rows: evaluate writes a file
            assert summary[key] == value, key
    other = tmp_path / "other" / built.name  # another model under the published name: refused, the file kept
    other.parent.mkdir()
    build_shape_model(skulls[:3], step_deg=4.0, n_modes=1, log=lambda _: None).save(other)
    with pytest.raises(ValueError, match="another shape model is released under this name"):
        release_surface("tiny", "tiny_shape_2", scores, out=models, shape_model=other)
    assert published.read_bytes() == built.read_bytes() and not (models / "tiny_shape_2.json").exists()
    published.write_bytes(b"another file")
    assert main(["evaluate", "--model", "tiny_shape", "--data", str(released["data"]), "--out", str(out),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "shape_model_tiny.npz" in err and "SHA-256" in err and len(err.strip().splitlines()) == 1
