"""Inference: grid predictions, their return to the original grid, and one-skull reconstruction.

The pipeline's rules and the ``skullrecon reconstruct`` command call the same functions
(:func:`predict`, :func:`~skullrecon.preprocess.from_grid`,
:func:`~skullrecon.postprocess.extract_implant`), so a designer's implant is made exactly as the
evaluated ones.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from skullrecon.io import Volume, atomic_path, memory_order, read_volume, write_volume
from skullrecon.models import load_model, pick_device
from skullrecon.postprocess import PostprocessConfig, extract_implant
from skullrecon.preprocess import Geometry, from_grid, load_case, preprocess_volume

if TYPE_CHECKING:
    from skullrecon.surfaces import SurfaceConfig

__all__ = ["predict", "probabilities", "stored_probabilities", "infer_cases", "read_prediction", "upsample_cases",
           "extract_cases", "reconstruct_file"]


@torch.no_grad()
def probabilities(net: torch.nn.Module, grid_input: np.ndarray, device: torch.device) -> torch.Tensor:
    """Foreground probabilities (float32, grid^3) for one binary grid input, left on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(grid_input, dtype=np.float32))[None, None].to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = net(x)
    return torch.sigmoid(logits.float())[0, 0]


def predict(net: torch.nn.Module, grid_input: np.ndarray, device: torch.device) -> np.ndarray:
    """:func:`probabilities` on the host (the pipeline's ``infer`` keeps them for ``upsample``)."""
    return probabilities(net, grid_input, device).cpu().numpy()


def stored_probabilities(prob: np.ndarray) -> np.ndarray:
    """Probabilities as the ``infer`` rule keeps them for ``upsample`` (float16: a quarter of the disk);
    ``skullrecon evaluate`` rounds the same way, so it scores exactly what the pipeline scores."""
    return prob.astype(np.float16)


def _save_prediction(path: Path, prob: np.ndarray, geom: Geometry, spec: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, prob=stored_probabilities(prob), geometry=np.array(geom.to_json()),
                            task=np.array(spec["task"]))


def infer_cases(model_path: str | Path, cases_dir: str | Path, out_dir: str | Path, device: str = "auto",
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Predict every preprocessed test case (``cases_dir/*.npz``) into ``out_dir/<name>.npz``."""
    dev = pick_device(device)
    net, spec = load_model(model_path, dev)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = sorted(Path(cases_dir).glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"{cases_dir}: no preprocessed cases (*.npz)")
    times = []
    for f in files:
        arrays, geom = load_case(f)
        if geom.grid != spec["grid"]:
            raise ValueError(f"{f}: grid {geom.grid} differs from the model's {spec['grid']} ({model_path})")
        t0 = time.perf_counter()
        prob = predict(net, arrays["defective"], dev)
        times.append(time.perf_counter() - t0)
        _save_prediction(out_dir / f.name, prob, geom, spec)
    summary = {"cases": len(files), "device": str(dev), "median_seconds": float(np.median(times))}
    log(json.dumps(summary))
    return summary


def read_prediction(pred_dir: str | Path, name: str, defective: Volume) -> tuple[np.ndarray, Geometry]:
    """A case's stored grid probabilities (float32) and geometry, checked against its defective skull."""
    pred_file = Path(pred_dir) / f"{name}.npz"
    if not pred_file.exists():
        raise FileNotFoundError(f"{pred_file}: prediction missing for case {name}")
    with np.load(pred_file) as data:
        prob, geom = data["prob"].astype(np.float32), Geometry.from_json(str(data["geometry"]))
    if defective.shape != geom.shape:
        raise ValueError(f"{defective.path}: shape {defective.shape} differs from the preprocessed {geom.shape}")
    return prob, geom


def upsample_cases(pred_dir: str | Path, cases_tsv: str | Path, out_dir: str | Path, threshold: float = 0.5,
                   log: Callable[[str], None] = print) -> int:
    """Each grid prediction back on its case's original grid, written like the defective skull."""
    import pandas as pd

    table = pd.read_csv(cases_tsv, sep="\t", dtype=str, keep_default_na=False)
    for row in table.itertuples():
        defective = read_volume(row.defective)
        prob, geom = read_prediction(pred_dir, row.name, defective)
        order = memory_order(defective.array)
        write_volume(Path(out_dir) / f"{row.name}.nrrd", from_grid(prob, geom, threshold, order=order),
                     like=defective)
        log(f"{row.name}: {geom.grid}^3 -> {geom.shape}")
    return len(table)


def extract_cases(upsampled_dir: str | Path, cases_tsv: str | Path, out_dir: str | Path, task: str,
                  cfg: PostprocessConfig, log: Callable[[str], None] = print) -> int:
    """Implants from upsampled predictions and the defective skulls, on the original grids."""
    import pandas as pd

    table = pd.read_csv(cases_tsv, sep="\t", dtype=str, keep_default_na=False)
    for row in table.itertuples():
        defective = read_volume(row.defective)
        pred = read_volume(Path(upsampled_dir) / f"{row.name}.nrrd")
        implant = extract_implant(pred.array, defective.array, defective.spacing, task, cfg)
        write_volume(Path(out_dir) / f"{row.name}.nrrd", implant, like=defective)
        log(f"{row.name}: implant {int(implant.sum())} voxels")
    return len(table)


def reconstruct_file(defective_path: str | Path, model_path: str | Path, out_dir: str | Path,
                     device: str = "auto", stl: bool = True, sha256: str | None = None,
                     volume: Volume | None = None,
                     network: tuple[torch.nn.Module, dict[str, Any]] | None = None,
                     refiner: tuple[str | Path, str | None] | None = None,
                     surface: SurfaceConfig | None = None) -> dict[str, Any]:
    """One defective skull in, the implant (volume and STL mesh) and the reconstruction out.

    Uses only the model file: grid, margin, task and post-processing come from its spec.
    Outputs keep the input's format, grid and header, and go into ``out_dir`` as one set with a
    manifest written last (:mod:`skullrecon.outputset`). Returns paths, per-stage seconds and
    ``warnings`` (an empty implant, or one so small that the skull may have nothing to fill).
    ``volume``: the skull at ``defective_path`` already read (the command line reads it while torch
    is imported); its reading is then not in ``seconds["load"]``.
    ``network``: the network (on ``device``, in eval mode) and its model spec, already loaded (a MONAI
    bundle's inference config builds them from the bundle's files, :mod:`skullrecon.bundle`);
    ``model_path`` is then only named in the manifest and never read.
    ``refiner``: a second stage's model file and the SHA-256 its card promises (:mod:`skullrecon.refine`): the
    first stage's output is refined at the finer grid around what it fills, then post-processed as before.
    ``surface``: the surface stage's settings (:mod:`skullrecon.surfaces`): after the first stage's implant, the
    skull's own surfaces continued over the hole it fills, at the scan's resolution.
    """
    from skullrecon.outputset import OutputSet, prepare_out_dir

    dev = pick_device(device)  # 'cuda' without a usable GPU: one error naming the node
    out_dir = prepare_out_dir(out_dir, [defective_path, model_path])  # before any work
    timings: dict[str, float] = {}
    t = time.perf_counter()
    defective = volume if volume is not None else read_volume(defective_path)
    if not defective.array.any():
        raise ValueError(f"{defective_path}: the defective skull is empty (no voxel is 1)")
    if network is None:
        net, spec = load_model(model_path, dev, need_postprocess=True, sha256=sha256)  # sha256: a released model's card
    else:
        net, spec = network
    second = load_model(refiner[0], dev, sha256=refiner[1]) if refiner is not None else None
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    grid_input, geom = preprocess_volume(defective.array, defective.spacing, spec["grid"], spec["margin"])
    timings["preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    prob = probabilities(net, grid_input, dev)  # stays on the device: from_grid thresholds there
    if dev.type == "cuda":
        torch.cuda.synchronize()
    timings["network"] = time.perf_counter() - t

    t = time.perf_counter()
    post = PostprocessConfig.from_dict(spec["postprocess"])
    # NIfTI and NRRD readers give Fortran-ordered arrays; element-wise steps that mix memory
    # orders are several times slower at 512^3, and a C-ordered result is slow to write back
    order = memory_order(defective.array)
    if second is None:
        prediction = from_grid(prob, geom, post.threshold, order=order)  # uint8, copied back from the device
    else:
        from skullrecon.refine import refine_prediction

        prediction = refine_prediction(defective.array, prob, grid_input, geom, spec["task"], *second, dev,
                                       post.threshold, order)
    timings["upsample" if second is None else "refine"] = time.perf_counter() - t

    suffix = ".nii.gz" if defective.format == "nifti" else ".nrrd"
    outputs = OutputSet(out_dir)  # staged, then moved into place as one set with a manifest last
    try:
        # the volumes (gzip, which frees the GIL) and the mesh are written side by side; a reconstruction
        # network's reconstruction does not wait for the implant, so it is written while the implant is extracted
        with ThreadPoolExecutor(max_workers=3) as pool:
            jobs = []
            # written early: a reconstruction network's own skull (with the surface stage: the implant's, after it)
            early = spec["task"] == "reconstruct" and surface is None
            if early:
                jobs.append(pool.submit(write_volume, outputs.path(f"reconstruction{suffix}"),
                                        prediction | defective.array, like=defective))
            t = time.perf_counter()
            implant = extract_implant(prediction, defective.array, defective.spacing, spec["task"], post)
            timings["extract"] = time.perf_counter() - t
            if surface is not None:
                from skullrecon.surfaces import surface_implant

                t = time.perf_counter()
                implant = surface_implant(implant, defective.array, defective.spacing, surface)
                timings["surface"] = time.perf_counter() - t

            t = time.perf_counter()
            if not early:
                jobs.append(pool.submit(write_volume, outputs.path(f"reconstruction{suffix}"),
                                        implant | defective.array, like=defective))
            jobs.append(pool.submit(write_volume, outputs.path(f"implant{suffix}"), implant, like=defective))
            if stl and implant.any():  # an empty implant has no surface: no STL (the caller warns)
                from skullrecon.mesh import write_stl

                jobs.append(pool.submit(write_stl, outputs.path("implant.stl"), implant, defective))
            for job in jobs:
                job.result()
        timings["write"] = time.perf_counter() - t  # what is left of the volumes and the mesh after extract
        warnings = _warnings(implant, defective.array, defective_path)
        result = {"seconds": timings, "device": str(dev), "implant_voxels": int(implant.sum()),
                  "empty": not implant.any(), "warnings": warnings}
        written = outputs.commit({"input": str(Path(defective_path).resolve()), "model": str(Path(model_path).resolve()),
                                  "refiner": str(Path(refiner[0]).resolve()) if refiner is not None else None,
                                  "surface": asdict(surface) if surface is not None else None,
                                  "method": spec.get("method"), "task": spec["task"], **result})
    except BaseException:
        outputs.discard()
        raise
    paths = {"implant": written[f"implant{suffix}"], "reconstruction": written[f"reconstruction{suffix}"]}
    if "implant.stl" in written:
        paths["mesh"] = written["implant.stl"]
    return {"paths": {k: str(v) for k, v in paths.items()}, **result}


#: An implant smaller than this fraction of the defective skull's bone is reported as "nothing to
#: fill". A heuristic: real SkullFix implants are 7-11 % of the defective skull's voxels (9 training
#: cases measured), while the test model's implants for complete skulls were 0.2-1.6 %.
MIN_IMPLANT_FRACTION = 0.01


def _warnings(implant: np.ndarray, defective: np.ndarray, path: str | Path) -> list[str]:
    """What the user must know before printing this implant (empty, or nothing to fill)."""
    n, bone = int(np.count_nonzero(implant)), int(np.count_nonzero(defective))
    if n == 0:
        return [f"the implant for {path} is empty: the model found no defect"]
    if n < MIN_IMPLANT_FRACTION * bone:
        return [f"the implant for {path} is only {n} voxels, {100 * n / bone:.2f}% of the skull's bone: the skull "
                "may be complete, with nothing to fill; check it before use"]
    return []
