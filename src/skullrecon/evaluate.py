"""Score one model file on any dataset in the SkullBreak/SkullFix layout (``skullrecon evaluate``).

Each case goes the pipeline's way, through the pipeline's functions: ``preprocess_volume`` ->
the network (:func:`~skullrecon.infer.predict`, probabilities kept as the ``infer`` rule keeps them)
-> :func:`~skullrecon.preprocess.from_grid` -> :func:`~skullrecon.postprocess.extract_implant` ->
:func:`~skullrecon.metrics.evaluate_case`. Same model, same cases: the same per-case numbers as the
run's ``metrics/<dataset>/<method>.csv``. Cases are scored in worker processes, each loading the
model once.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from skullrecon.datasets import Case, DatasetError, Layout, list_cases

if TYPE_CHECKING:  # torch and the volume types only for annotations: the workers import them when they score
    import torch

    from skullrecon.io import Volume
    from skullrecon.preprocess import Geometry
    from skullrecon.surfaces import SurfaceConfig

__all__ = ["cases_of", "evaluate_model", "grid_probabilities", "load_first_stages", "score_probabilities",
           "summary_rows"]

_WORKER: dict[str, Any] = {}


def cases_of(data: str | Path, ids: Sequence[str] | None = None) -> list[Case]:
    """The cases of one split folder (``defective_skull/``, ``implant/``; SkullBreak's defect-type
    subfolders found by themselves), optionally only ``ids``, each with its ground-truth implant."""
    data = Path(data)
    defective = data / "defective_skull"
    if not defective.is_dir():
        raise DatasetError(f"{defective}: folder not found; --data is a split folder of the SkullBreak/SkullFix "
                           "layout (defective_skull/, implant/), e.g. <SkullFix>/training_set")
    types = tuple(sorted(p.name for p in defective.iterdir() if p.is_dir() and any(p.glob("*.nrrd")))) or None
    wanted = tuple(f"{int(i):03d}" if str(i).isdigit() else str(i) for i in ids) if ids else None
    layout = Layout(train=data.name, test=data.name, types=types, test_ids=wanted)
    cases = list_cases(data.parent, layout, "test")
    for case in cases:
        if case.implant is None:
            raise DatasetError(f"{data / 'implant'}: no ground-truth implant for case {case.name}")
    return cases


def _init(model: str, sha256: str | None, device: str, threads: int,
          refiner: tuple[str, str | None] | None = None, surface: SurfaceConfig | None = None) -> None:
    import torch

    from skullrecon.models import load_model, pick_device

    torch.set_num_threads(threads)
    dev = pick_device(device)
    net, spec = load_model(model, dev, need_postprocess=True, sha256=sha256)
    second = load_model(refiner[0], dev, sha256=refiner[1]) if refiner is not None else None
    _WORKER.update(net=net, spec=spec, device=dev, refiner=second, surface=surface)


def grid_probabilities(net: torch.nn.Module, spec: dict[str, Any], defective: Volume,
                       device: torch.device) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """A first stage's grid probabilities for one defective skull, rounded as the pipeline stores them, with the
    grid input and geometry they belong to (what :func:`score_probabilities` takes)."""
    from skullrecon.infer import predict, stored_probabilities
    from skullrecon.preprocess import preprocess_volume

    grid_input, geom = preprocess_volume(defective.array, defective.spacing, spec["grid"], spec["margin"])
    return stored_probabilities(predict(net, grid_input, device)).astype(np.float32), grid_input, geom


def load_first_stages(names: Sequence[str], device: torch.device) -> dict[str, tuple[str, torch.nn.Module,
                                                                                   dict[str, Any]]]:
    """Released first stages (names or files, each checked against its card) keyed by method (mae_d,
    segresnet...): Table I's rows of a benchmark that scores one run's releases; a second model of one method is
    refused."""
    from skullrecon.models import load_model
    from skullrecon.release import resolve_model

    nets: dict[str, tuple[str, torch.nn.Module, dict[str, Any]]] = {}
    for name in names:
        path, sha = resolve_model(name)
        net, spec = load_model(path, device, need_postprocess=True, sha256=sha)
        if spec["method"] in nets:
            raise SystemExit(f"{name}: a second {spec['method']} first stage; score one run's releases at a time")
        nets[spec["method"]] = (name, net, spec)
    return nets


def _score(case: Case, margin_mm: float) -> dict[str, Any]:
    from skullrecon.io import read_volume, same_grid

    net, spec, dev = _WORKER["net"], _WORKER["spec"], _WORKER["device"]
    defective, gt = read_volume(case.defective), read_volume(case.implant)
    differs = "shape" if defective.shape != gt.shape else same_grid(defective, gt)
    if differs:
        raise ValueError(f"{case.implant}: not on the grid of {case.defective} ({differs})")
    prob, grid_input, geom = grid_probabilities(net, spec, defective, dev)
    result = score_probabilities(prob, grid_input, geom, defective, gt, spec, dev, margin_mm, _WORKER.get("refiner"),
                                 _WORKER.get("surface"))
    return {"case": case.name, "defect_type": case.defect_type or "", **result}


def score_probabilities(prob: np.ndarray, grid_input: np.ndarray, geom: Geometry, defective: Volume, gt: Volume,
                        spec: dict[str, Any], device: torch.device, margin_mm: float = 10.0,
                        refiner: tuple[torch.nn.Module, dict[str, Any]] | None = None,
                        surface: SurfaceConfig | None = None) -> dict[str, Any]:
    """The AutoImplant metrics of a first stage's grid probabilities (rounded as the pipeline stores them) against
    the true implant ``gt``: upsampled, or refined by ``refiner`` (a loaded second stage and its spec) as the refine
    rule runs it, then the model's own post-processing. One path for ``skullrecon evaluate`` and the benchmarks that
    score variants of a first stage's output (``bench/refine.py``, ``bench/test_time.py``)."""
    from skullrecon.metrics import evaluate_case
    from skullrecon.postprocess import PostprocessConfig, extract_implant
    from skullrecon.preprocess import from_grid

    post = PostprocessConfig.from_dict(spec["postprocess"])
    if refiner is None:
        prediction = from_grid(prob, geom, post.threshold)
    else:
        from skullrecon.refine import refine_prediction

        prediction = refine_prediction(defective.array, prob, grid_input, geom, spec["task"], *refiner, device,
                                       post.threshold)
    implant = extract_implant(prediction, defective.array, defective.spacing, spec["task"], post)
    if surface is not None:
        from skullrecon.surfaces import surface_implant

        implant = surface_implant(implant, defective.array, defective.spacing, surface)
    return evaluate_case(implant, gt.array, defective.array, gt.spacing, margin_mm)


def evaluate_model(model: str | Path, sha256: str | None, data: str | Path, ids: Sequence[str] | None = None,
                   out_csv: str | Path | None = None, workers: int | None = None, device: str = "cpu",
                   margin_mm: float = 10.0, progress: bool = True,
                   refiner: tuple[str | Path, str | None] | None = None,
                   surface: SurfaceConfig | None = None) -> pd.DataFrame:
    """Per-case DSC, boundary DSC and HD95 of ``model`` on ``data`` (a split folder), in case order.

    ``refiner``: a second stage's model file and its card's SHA-256 (:mod:`skullrecon.refine`).
    ``surface``: the surface stage's settings (:mod:`skullrecon.surfaces`), after the first stage.

    Written to ``out_csv`` (columns as the pipeline's per-case metrics) when given.
    """
    from tqdm import tqdm

    cases = cases_of(data, ids)
    workers = max(1, min(workers or os.cpu_count() or 1, len(cases)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    second = (str(refiner[0]), refiner[1]) if refiner is not None else None
    # here first: a bad or altered model fails before any worker
    _init(str(model), sha256, device, threads, second, surface)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(cases), unit="case", desc=f"evaluate {Path(model).name}", disable=not progress)
    if workers == 1:
        for case in cases:
            rows.append(_score(case, margin_mm))
            bar.update()
    else:
        spawn = multiprocessing.get_context("spawn")  # forking a process whose torch runs threads can hang
        with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_init,
                                 initargs=(str(model), sha256, device, threads, second, surface)) as pool:
            for row in pool.map(_score, cases, [margin_mm] * len(cases)):
                rows.append(row)
                bar.update()
    bar.close()
    table = pd.DataFrame(rows)
    if out_csv is not None:
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out_csv, index=False)
    return table


def summary_rows(table: pd.DataFrame) -> dict[str, Any]:
    """Mean and median of each metric (an empty prediction counts DSC 0; its undefined HD95 is left out).

    Reduced in case order, so a table with its rows in another order gives the same floats to the last bit.
    """
    table = table.sort_values(["case", "defect_type"], kind="stable")
    out: dict[str, Any] = {"cases": len(table), "failed": int(table["empty_prediction"].astype(bool).sum())}
    for metric in ("dsc", "bdsc", "hd95"):
        values = table[metric].dropna()
        out[f"{metric}_mean"], out[f"{metric}_median"] = float(values.mean()), float(values.median())
    return out
