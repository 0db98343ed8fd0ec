"""Released models: trained model files shipped in the repository, each with a model card.

A release is three files in the models folder (``models/`` at the repository root, or
``SKULLRECON_MODELS``; an installed wheel carries a copy of them, see :func:`models_dir`):

    <name>.pt     the pipeline's deliverable model file (network + post-processing), unchanged
    <name>.json   its card for code: data, licence, config, commit, epochs, metrics, size, SHA-256
    <name>.md     the same card for people

:func:`release_from_run` makes all three from a finished run folder, so a 256^3 cluster run
publishes its models the same way as the CPU run. :func:`resolve_model` turns a released name or
a path into a file and the SHA-256 its card promises; :func:`~skullrecon.models.load_model`
refuses the file when its bytes do not match.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skullrecon.io import atomic_path
from skullrecon.settings import is_mae

if TYPE_CHECKING:
    from skullrecon.surfaces import SurfaceConfig

__all__ = ["DEFAULT_MODEL", "CARD_FORMAT", "models_dir", "released", "resolve_model", "sha256_of",
           "release_from_run", "headline", "network_from_release", "resolve_refiner", "release_refined",
           "resolve_surface", "release_surface"]

#: What ``skullrecon reconstruct`` uses without ``--model``: the released MAE (D) with the highest
#: validation score, the GPU-trained one (0.797 against the CPU run's 0.769), with the surface stage
#: (:mod:`skullrecon.surfaces`), which raised it on the 4 validation skulls from 0.866 to 0.893 DSC, above the
#: learned second stage's 0.874 (docs/ablation.md, "The skull's own surfaces"; chosen before the test skulls), and to
#: 0.905-0.908 with the shape model of healthy skulls ("A shape model of healthy skulls" and "The shape model fitted
#: near the hole, with all its modes").
DEFAULT_MODEL = "mae_d_gpu_surface"
CARD_FORMAT = "skullrecon-model-card/1"
#: Where an installed wheel keeps its copy of the released models, inside the package.
BUNDLED = "released_models"

DATA_LICENCE = (
    "The networks were trained on SkullFix (AutoImplant 2020, Li et al.), published under CC BY-NC-SA 4.0. "
    "Weights learned from that data are treated as adapted material: use them for non-commercial purposes "
    "only, credit the dataset, and share anything built from them under the same licence. They are not a "
    "medical device."
)


def models_dir() -> Path:
    """The released models' folder: ``SKULLRECON_MODELS`` if set; else ``models/`` of the source tree
    (a clone, or an editable install of one); else the copy an installed wheel carries,
    ``skullrecon/released_models/`` (setup.py puts every release there at build time)."""
    env = os.environ.get("SKULLRECON_MODELS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    tree = here.parents[1]  # src/skullrecon -> the repository root
    if (tree / "pyproject.toml").is_file() and (tree / "models").is_dir():
        return tree / "models"
    return here / BUNDLED


def sha256_of(data: bytes | Path) -> str:
    return hashlib.sha256(data if isinstance(data, bytes) else Path(data).read_bytes()).hexdigest()


def _read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable model card ({err})") from err
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT or not isinstance(card.get("sha256"), str):
        raise ValueError(f"{path}: not a skullrecon model card")
    return card


def released(folder: str | Path | None = None) -> list[dict[str, Any]]:
    """Every released model's card, by name."""
    folder = Path(folder) if folder else models_dir()
    return [_read_card(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def resolve_model(model: str | Path | None, folder: str | Path | None = None) -> tuple[Path, str | None]:
    """A model file and the SHA-256 its card promises (None for a file without a card).

    ``model`` is a released name (``skullrecon models`` lists them), a path to a model file, or None
    for :data:`DEFAULT_MODEL`. A path with a card beside it (``<stem>.json``, as in the models
    folder) is checked against that card too.
    """
    folder = Path(folder) if folder else models_dir()
    name = DEFAULT_MODEL if model is None else str(model)
    path = Path(name)
    if not path.is_file() and (folder / f"{name}.json").is_file():
        card = _read_card(folder / f"{name}.json")
        return folder / card["file"], card["sha256"]
    if path.is_file():
        beside = path.with_suffix(".json")
        return path, (_read_card(beside)["sha256"] if beside.is_file() else None)
    names = [c["name"] for c in released(folder)]
    if model is None:
        raise FileNotFoundError(f"{folder}: no released model {name!r} here; pass --model (a model file of a "
                                "finished run, results/<run>/models/<method>.pt)")
    raise FileNotFoundError(f"{name}: neither a model file nor a released model (released: "
                            f"{', '.join(names) or 'none'}; `skullrecon models` lists them)")


def resolve_refiner(model: str | Path | None, refiner: str | None = None,
                    folder: str | Path | None = None) -> tuple[Path, str | None] | None:
    """The second stage to run after ``model`` (:mod:`skullrecon.refine`) and the SHA-256 a card promises for it.

    ``refiner``: ``None`` for what ``model``'s card names (a two-stage release; a single-stage model or a plain
    file: none), ``"none"`` for the single stage, or a refiner file. A two-stage release carries both networks:
    its card's ``file`` is the first stage, its ``refiner`` the second.
    """
    if refiner is not None:
        if refiner in ("none", "surface"):  # surface: the stage with no network, resolve_surface's
            return None
        path = Path(refiner)
        if not path.is_file():
            raise FileNotFoundError(f"{refiner}: no such refiner file (or 'none' for the first stage alone)")
        return path, None
    card_path = _card_path(model, folder)
    second = _read_card(card_path).get("refiner") if card_path else None
    return (card_path.parent / second["file"], second["sha256"]) if second else None


def _card_path(model: str | Path | None, folder: str | Path | None) -> Path | None:
    """The card of ``model`` (a released name, a file with a card beside it, or None for the default), if any."""
    folder = Path(folder) if folder else models_dir()
    name = DEFAULT_MODEL if model is None else str(model)
    card_path = Path(name).with_suffix(".json") if Path(name).is_file() else folder / f"{name}.json"
    return card_path if card_path.is_file() else None


def resolve_surface(model: str | Path | None, refiner: str | None = None,
                    folder: str | Path | None = None) -> SurfaceConfig | None:
    """The surface stage's settings (:mod:`skullrecon.surfaces`) to run after ``model``: for ``refiner ==
    "surface"`` the defaults, for any other ``refiner`` none, else what ``model``'s card names."""
    from skullrecon.surfaces import SurfaceConfig

    if refiner is not None:
        return SurfaceConfig() if refiner == "surface" else None
    card_path = _card_path(model, folder)
    surface = _read_card(card_path).get("surface") if card_path else None
    if not surface:
        return None
    settings = dict(surface["settings"])
    if settings.get("shape_model"):  # the shape model the card names, beside it, the bytes its card promises
        path = card_path.parent / settings["shape_model"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the shape model that {card_path.name} names is missing")
        if sha256_of(path) != surface["shape_model"]["sha256"]:
            raise ValueError(f"{path}: not the shape model {card_path.name} names (its SHA-256 differs)")
        settings["shape_model"] = str(path)
    return SurfaceConfig.from_dict(settings)


def headline(card: dict[str, Any]) -> dict[str, Any]:
    """The numbers ``skullrecon models`` shows for one card."""
    test, gen = card["metrics"].get("test", {}), card["metrics"].get("generalisation", {})
    second = card.get("refiner")  # a two-stage release: both networks
    stage = " + 2nd" if second else " + surface" if card.get("surface") else ""
    return {"name": card["name"], "method": card["method"] + stage, "grid": card["grid"],
            "test_cases": test.get("cases"), "test_dsc": test.get("dsc_mean"), "test_hd95": test.get("hd95_mean"),
            "generalisation_dsc": gen.get("dsc_mean"),
            "size_mb": round((card["file_bytes"] + (second["file_bytes"] if second else 0)) / 1e6, 2),
            "sha256": card["sha256"][:12]}


def _summary(csv: Path) -> dict[str, Any]:
    import pandas as pd  # here, not at the top: `reconstruct` resolves models through this module

    from skullrecon.evaluate import summary_rows

    table = pd.read_csv(csv, dtype={"case": str, "defect_type": str})
    if "defect_type" in table:  # SkullFix's cases have none: empty, not NaN
        table["defect_type"] = table["defect_type"].fillna("")
    out = summary_rows(table)
    out["per_case_csv"] = f"{csv.parent.name}/{csv.name}"
    out["scored_on"] = str(table["scored_on"].iloc[0]) if "scored_on" in table and len(table) else ""
    kinds = [k for k in dict.fromkeys(table.get("defect_type", ())) if k]
    if len(kinds) > 1:  # SkullBreak's kinds: each kind's row
        out["per_kind"] = {k: summary_rows(table[table["defect_type"] == k]) for k in kinds}
    out["per_case"] = per_case_rows(table)  # every case, which a test can score again in part
    return out


def per_case_rows(table: Any) -> list[dict[str, Any]]:
    """A metrics table's cases as a card keeps them: case, defect type, DSC, boundary DSC, HD95."""
    kind = table["defect_type"] if "defect_type" in table else [""] * len(table)
    return [{"case": str(case), "defect_type": str(k), "dsc": float(d), "bdsc": float(b), "hd95": float(h)}
            for case, k, d, b, h in zip(table["case"], kind, table["dsc"], table["bdsc"], table["hd95"])]


def _network_file(run: Path, method: str, dataset: str) -> str:
    return f"{method}.pt" if is_mae(method) else f"{method}_{dataset}.pt"


def _epochs(run: Path, stem: str) -> dict[str, Any]:
    import pandas as pd

    log = run / "training" / f"{stem}.csv"
    if not log.is_file():
        return {}
    curve = pd.read_csv(log)
    # an MAE's own score is the bone it restores; a baseline's log has that column too (equal to val_dsc)
    column = "val_restored_dsc" if is_mae(stem) and "val_restored_dsc" in curve else "val_dsc"
    return {"trained": int(curve["epoch"].max()), "last_validation": column,
            "last_validation_value": float(curve[column].iloc[-1]),
            "best_validation_value": float(curve[column].max()),
            "best_validation_epoch": int(curve.loc[curve[column].idxmax(), "epoch"])}


def release_from_run(run: str | Path, method: str, name: str | None = None, dataset: str = "skullfix",
                     out: str | Path | None = None, epochs_chosen: str = "", trained_on: str = "") -> Path:
    """Publish ``run``'s model for ``method`` as ``<name>.pt`` + card (JSON and Markdown) in ``out``.

    Reads only the finished run folder: ``models/``, ``metrics/<dataset>[_generalisation]/<method>.csv``,
    ``training/``, ``config.yaml`` and ``env.json`` (the commit). Returns the card's path.
    """
    import torch

    run, out = Path(run), Path(out) if out else models_dir()
    if out == Path(__file__).resolve().parent / BUNDLED:
        raise ValueError(f"{out}: the installed package's copy of the releases, not a place to publish; pass --out "
                         "(or run from a clone, whose models/ is the default)")
    name = name or method
    model_file = run / "models" / _network_file(run, method, dataset)
    needed = [model_file, run / "config.yaml", run / "env.json", run / "metrics" / dataset / f"{method}.csv"]
    for path in needed:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; is {run} a finished run with {method} on {dataset}?")
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    env = json.loads((run / "env.json").read_text())
    from skullrecon.models import embed_script

    # the run's model, with a TorchScript copy of its network for fast loading where it is exact
    blob = embed_script(torch.load(model_file, map_location="cpu", weights_only=True))
    buf = io.BytesIO()
    torch.save(blob, buf)
    data = buf.getvalue()
    spec = blob["spec"]
    metrics = {"test": _summary(run / "metrics" / dataset / f"{method}.csv")}
    gen = run / "metrics" / f"{dataset}_generalisation" / f"{method}.csv"
    if gen.is_file():
        metrics["generalisation"] = _summary(gen)
    from skullrecon.settings import baseline_train

    # what this network trained with: a baseline's own epochs (epochs_per_method, epochs_per_dataset) included
    train = config["mae"].get("train", {}) if is_mae(method) else baseline_train(config, method, dataset)
    card = {
        "format": CARD_FORMAT, "name": name, "file": f"{name}.pt", "method": method, "arch": spec["arch"],
        "task": spec["task"], "grid": spec["grid"], "margin": spec["margin"],
        "parameters": int(sum(v.numel() for v in blob["state_dict"].values() if v.is_floating_point())),
        "file_bytes": len(data), "sha256": sha256_of(data), "torchscript": "script" in blob,
        "training": {"run": config.get("run", run.name), "dataset": dataset, "data": trained_on or
                     _data_note(config, dataset), "commit": env.get("git_commit"), "commit_dirty": env.get("git_dirty"),
                     "torch": env.get("torch"), "monai": env.get("monai"), "host": env.get("host"),
                     "test_ids": _test_ids(config, dataset), "epochs": _epochs(run, model_file.stem), "epochs_chosen": epochs_chosen,
                     "network": spec["network"], "train": train,
                     "postprocess": spec.get("postprocess", {})},
        "metrics": metrics, "licence": DATA_LICENCE,
    }
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / card["file"]) as tmp:
        tmp.write_bytes(data)
    return _write_card(out, card)


def network_from_release(name: str, out_path: str | Path, config: dict[str, Any], folder: str | Path | None = None) -> str:
    """Write released MAE ``name``'s network as a run's trained network file (``networks/mae_<v>.pt``, no
    post-processing: ``bundle_model`` adds the run's), after checking that the release fits the run ``config``:
    its SHA-256, method family, grid and margin, and that it learned from the run's MAE datasets with the same
    test skulls held out, so that no skull the run scores was seen in training. Returns a line for the log."""
    from skullrecon.models import _read, _rebuilt, save_model

    folder = Path(folder) if folder else models_dir()
    card_path = folder / f"{name}.json"
    if not card_path.is_file():
        raise FileNotFoundError(f"{card_path}: no released model {name!r} (mae.released in the config)")
    card = _read_card(card_path)
    training = card["training"]
    want = {"task": ("reconstruct", card["task"]), "grid": (config["preprocess"]["grid"], card["grid"]),
            "margin": (config["preprocess"]["margin"], card["margin"])}
    for dataset in config["mae"]["datasets"]:
        want[f"held-out test skulls of {dataset}"] = (_test_ids(config, dataset), training.get("test_ids"))
    want["training dataset"] = (sorted(config["mae"]["datasets"]), sorted([training["dataset"]]))
    wrong = [f"{what} {got!r}, the run has {need!r}" for what, (need, got) in want.items() if need != got]
    if wrong:
        raise ValueError(f"{card_path}: release {name!r} does not fit this run: {'; '.join(wrong)}")
    blob = _read(folder / card["file"], card["sha256"])
    spec = {k: v for k, v in blob["spec"].items() if k != "postprocess"}
    save_model(out_path, _rebuilt(spec, blob["state_dict"], folder / card["file"]), spec)
    return (f"{name}: {card['file']} (SHA-256 {card['sha256'][:12]}, run {training['run']} at commit "
            f"{training['commit'][:10]}, {training['epochs']['trained']} epochs) -> {out_path}")


def _skulls_of(config: dict[str, Any], dataset: str) -> str:
    """The configured dataset whose skulls ``dataset`` holds: the SkullBreak-like set's source, else itself."""
    return (config.get("skullbreaklike") or {}).get("source", dataset) if dataset == "skullbreaklike" else dataset


def _test_ids(config: dict[str, Any], dataset: str) -> list[str] | None:
    ids = config.get("datasets", {}).get(_skulls_of(config, dataset), {}).get("layout", {}).get("test_ids")
    return [f"{int(i):03d}" for i in ids] if ids else None


def _data_note(config: dict[str, Any], dataset: str) -> str:
    if dataset == "skullbreaklike":
        spec = config["skullbreaklike"]
        return (f"skullbreaklike: SkullBreak's kinds {', '.join(spec['kinds'])} cut (seed {spec['seed']}, "
                f"skullrecon.skullbreaklike) into the complete skulls of {_data_note(config, spec['source'])}")
    entry = config.get("datasets", {}).get(dataset, {})
    layout = entry.get("layout", {})
    ids = layout.get("test_ids")
    held = f"; test skulls {', '.join(f'{int(i):03d}' for i in ids)} held out" if ids else ""
    where = entry.get("data_dir") or entry.get("source", "?")
    return f"{dataset} ({where}), training folder '{layout.get('train', '?')}'{held}"


def _rescore_line(card: dict[str, Any]) -> str:
    """How to score a card's test row again."""
    t = card["training"]
    if t.get("dataset") == "skullbreaklike":  # made again, the same bytes, by the run's own rule
        folder = f"results/{t['run']}/data/skullbreaklike"
        return (f"Rescore the test row: `skullrecon evaluate --model {card['name']} --data {folder}/evaluation "
                f"--out scores.csv`, the folder made first by `snakemake --profile realdata --configfile "
                f"realdata/run-skullbreaklike.yaml {folder}` (its evaluation/ holds the test skulls only).")
    return ("Rescore the test row: `skullrecon evaluate --model " + card["name"] + " --data <the training data's split "
            "folder> " + (f"--ids {' '.join(t['test_ids'])} " if t.get("test_ids") else "") + "--out scores.csv`.")


def card_markdown(card: dict[str, Any]) -> str:
    """The card for people: what the JSON says, in the order a user asks."""
    t, m = card["training"], card["metrics"]
    rows = []
    def row(label: str, s: dict[str, Any], where: str) -> str:
        return (f"| {label} ({s['cases']}) | {s['dsc_mean']:.3f} / {s['dsc_median']:.3f} | "
                f"{s['bdsc_mean']:.3f} / {s['bdsc_median']:.3f} | {s['hd95_mean']:.2f} / {s['hd95_median']:.2f} "
                f"| {s['failed']} | {where} |")

    for key, label in (("test", "test skulls"), ("generalisation", "new defects on the test skulls")):
        if key in m:
            rows.append(row(label, m[key], f"`{m[key]['per_case_csv']}`"))
            rows += [row(f"{label}, {kind}", part, "") for kind, part in m[key].get("per_kind", {}).items()]
    epochs = t.get("epochs", {})
    return "\n".join([
        f"# Model card: {card['name']}", "",
        f"{card['method']} ({card['arch']}, task {card['task']}) on a {card['grid']}^3 grid; "
        f"{card['parameters']:,} parameters; `{card['file']}`, {card['file_bytes']:,} bytes, "
        f"SHA-256 `{card['sha256']}` (checked on every load).", "",
        "## Metrics (AutoImplant conventions; mean / median)", "",
        "| cases | DSC | boundary DSC (10 mm) | HD95 (mm) | failed | per case, in the run |", "|---|---|---|---|---|---|",
        *rows, "",
        _rescore_line(card), "",
        "## Training", "",
        f"- data: {t['data']}",
        f"- run `{t['run']}` at commit `{t['commit']}`{' (uncommitted changes)' if t.get('commit_dirty') else ''}; "
        f"torch {t.get('torch')}, MONAI {t.get('monai')}, host {t.get('host')}",
        f"- epochs: {epochs.get('trained', '?')} trained; last validation {epochs.get('last_validation', '')} "
        f"{epochs.get('last_validation_value', float('nan')):.3f} (best {epochs.get('best_validation_value', float('nan')):.3f} "
        f"at epoch {epochs.get('best_validation_epoch', '?')}); the file holds the last epoch's network",
        f"- how the epochs were chosen: {t.get('epochs_chosen') or 'the run config (see its comments)'}",
        f"- network: `{json.dumps(t['network'])}`",
        f"- training settings: `{json.dumps(t['train'])}`",
        f"- post-processing: `{json.dumps(t['postprocess'])}`", "",
        *_second_stage_lines(card),
        "## Licence", "", card["licence"], "",
    ])


def _second_stage_lines(card: dict[str, Any]) -> list[str]:
    """A two-stage release's second stage, for its card (nothing for a single-stage one)."""
    r = card.get("refiner")
    if card.get("surface"):
        return _surface_lines(card)
    if not r:
        return []
    single = card["single_stage"]
    s = single["metrics"].get("test", {})
    t = r.get("training", {})
    learns = f"the outputs of {r['first_stage']['method']}" if r.get("first_stage") else "a simulated first stage"
    return [
        "## Second stage", "",
        f"The first stage above is the release `{single['name']}` (alone: test DSC "
        f"{s.get('dsc_mean', float('nan')):.3f}, "
        f"HD95 {s.get('hd95_mean', float('nan')):.2f} mm); the metrics above are both stages'. The second stage "
        f"(`skullrecon.refine`) refines its output on a {r['grid']}^3 grid of the same box around what it fills: "
        f"`{r['file']}`, {r['file_bytes']:,} bytes, SHA-256 `{r['sha256']}` (checked on every load), "
        f"{r['parameters']:,} parameters.", "",
        f"- data: {t.get('data', '')}",
        f"- run at commit `{t.get('commit', '?')}`; {t.get('cpu', '')}",
        f"- learns from: {learns} on healthy skulls cut by the MAE (D)'s masks; no defect",
        f"- how it was chosen: {t.get('chosen', '')}",
        f"- network: `{json.dumps(r['network'])}`; settings: `{json.dumps(r['refine'])}`",
        f"- training settings: `{json.dumps(r['train'])}`", "",
    ]


def _write_card(out: Path, card: dict[str, Any]) -> Path:
    """A card for code and its page for people, beside the released file."""
    (out / f"{card['name']}.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / f"{card['name']}.md").write_text(card_markdown(card))
    return out / f"{card['name']}.json"


def _two_stage_card(out: Path, first: str, name: str, test_csv: str | Path,
                    generalisation_csv: str | Path | None) -> dict[str, Any]:
    """The released first stage ``first``'s card as release ``name`` with both stages' metrics (``test_csv``,
    ``generalisation_csv``: per-case files) and the first stage's own under ``single_stage``."""
    first_card = _read_card(out / f"{first}.json")
    metrics = {"test": _summary(Path(test_csv))}
    if generalisation_csv is not None:
        metrics["generalisation"] = _summary(Path(generalisation_csv))
    return {**first_card, "name": name, "metrics": metrics,
            "single_stage": {"name": first, "metrics": first_card["metrics"]}}


def _surface_lines(card: dict[str, Any]) -> list[str]:
    single, surface = card["single_stage"], card["surface"]
    s = single["metrics"].get("test", {})
    return [
        "## Second stage: the skull's own surfaces", "",
        f"The first stage above is the release `{single['name']}` (alone: test DSC "
        f"{s.get('dsc_mean', float('nan')):.3f}, HD95 {s.get('hd95_mean', float('nan')):.2f} mm); the metrics above "
        "are both stages'. The second stage (`skullrecon.surfaces`) has no network: the skull's outer and inner "
        "surfaces around the hole the first stage fills are continued over it (with a shape model of healthy skulls "
        "where one is named below) and averaged with the first stage's own, at the scan's resolution.", "",
        f"- settings: `{json.dumps(surface['settings'])}`",
        *([f"- shape model of healthy skulls: `{surface['shape_model']['file']}` (SHA-256 "
           f"`{surface['shape_model']['sha256']}`), {surface['shape_model']['modes']} modes from "
           f"{len(surface['shape_model']['skulls'])} complete skulls; {surface['shape_model']['built']}"]
          if surface.get("shape_model") else []),
        f"- how they were chosen: {surface.get('chosen', '')}",
        f"- scored at commit `{surface.get('commit', '?')}`", "",
    ]


def release_surface(first: str, name: str, test_csv: str | Path, generalisation_csv: str | Path | None = None,
                    settings: dict[str, Any] | None = None, chosen: str = "", commit: str = "",
                    out: str | Path | None = None, shape_model: str | Path | None = None,
                    shape_model_built: str = "") -> Path:
    """A release ``name`` of the released first stage ``first`` (its file, unchanged) with the surface stage
    (:mod:`skullrecon.surfaces`, ``settings`` or its defaults): the card is the first stage's with both stages'
    metrics from ``test_csv`` (and ``generalisation_csv``) and the first stage's own under ``single_stage``.
    ``shape_model``: a shape model file (:mod:`skullrecon.shape_model`) the stage uses, published beside the card
    with its SHA-256, its skulls and ``shape_model_built`` (how it was made)."""
    from dataclasses import asdict

    from skullrecon.surfaces import SurfaceConfig

    out = Path(out) if out else models_dir()
    surface = {"settings": asdict(SurfaceConfig.from_dict(settings or {})), "chosen": chosen, "commit": commit}
    if shape_model is not None:
        surface["settings"]["shape_model"], surface["shape_model"] = _publish_shape_model(Path(shape_model), out,
                                                                                          shape_model_built)
    card = {**_two_stage_card(out, first, name, test_csv, generalisation_csv), "surface": surface}
    return _write_card(out, card)


def _publish_shape_model(path: Path, out: Path, built: str) -> tuple[str, dict[str, Any]]:
    """The shape model file beside the cards (several surface releases share it) and what a card says of it."""
    from skullrecon.shape_model import ShapeModel

    data = path.read_bytes()
    model = ShapeModel.load(path)
    existing = out / path.name
    if existing.is_file() and sha256_of(existing) != sha256_of(data):  # other cards name it: as release_refined does
        raise ValueError(f"{existing}: another shape model is released under this name; publish it under another")
    if not existing.is_file():
        with atomic_path(existing) as tmp:
            tmp.write_bytes(data)
    return path.name, {"file": path.name, "file_bytes": len(data), "sha256": sha256_of(data),
                       "skulls": list(model.skulls), "modes": int(len(model.variance)), "step_deg": model.step_deg,
                       "built": built, "licence": DATA_LICENCE}


def release_refined(first: str, refiner: str | Path, name: str, test_csv: str | Path,
                    generalisation_csv: str | Path | None = None, training: dict[str, Any] | None = None,
                    refiner_name: str = "refiner", out: str | Path | None = None, script: bool = True) -> Path:
    """A two-stage release ``name``: the released first stage ``first`` (its file, unchanged) and the second stage
    ``refiner`` (a trained refiner file, published as ``<refiner_name>.pt``; several two-stage releases share it).

    The card is the first stage's with the second stage's file, SHA-256 and ``training`` (data, commit, settings),
    the two stages' metrics from ``test_csv`` (and ``generalisation_csv``; per-case files of ``skullrecon evaluate
    --refiner`` or ``bench/refine.py``) and the first stage's own metrics under ``single_stage``. ``script``: add
    the second stage's TorchScript copy (it loads without MONAI; it doubles the file).
    """
    import torch

    from skullrecon.models import embed_script

    out = Path(out) if out else models_dir()
    blob = torch.load(refiner, map_location="cpu", weights_only=True)
    if not script:
        blob = {k: v for k, v in blob.items() if k != "script"}
    elif "script" not in blob:  # a released refiner keeps its copy: tracing again gives other bytes
        blob = embed_script(blob)
    if blob["spec"].get("task") != "refine":
        raise ValueError(f"{refiner}: not a second-stage network (task {blob['spec'].get('task')!r})")
    buf = io.BytesIO()
    torch.save(blob, buf)
    data = buf.getvalue()
    file = f"{refiner_name}.pt"
    existing = out / file
    if existing.is_file() and sha256_of(existing) != sha256_of(data):
        raise ValueError(f"{existing}: another second stage is released under this name; pass another refiner_name")
    spec = blob["spec"]
    card = {**_two_stage_card(out, first, name, test_csv, generalisation_csv),
            "refiner": {"file": file, "sha256": sha256_of(data), "file_bytes": len(data), "grid": spec["grid"],
                        "coarse_grid": spec["refine"]["coarse_grid"], "torchscript": "script" in blob,
                        "parameters": int(sum(v.numel() for v in blob["state_dict"].values() if v.is_floating_point())),
                        "network": spec["network"], "refine": spec["refine"], "train": spec.get("train"),
                        "val_restored_dsc": spec.get("val_dsc"), "first_stage": spec.get("first_stage"),
                        "training": training or {}}}
    with atomic_path(existing) as tmp:
        tmp.write_bytes(data)
    return _write_card(out, card)
