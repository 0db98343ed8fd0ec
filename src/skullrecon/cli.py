"""The ``skullrecon`` command line: single-case use outside the workflow.

    skullrecon reconstruct DEFECTIVE --out DIR [--model M]  # implant volume + STL (released MAE (D) by default)
    skullrecon models                                       # the released models and their cards' numbers
    skullrecon evaluate --model M --data SPLIT --out CSV    # a model scored on any dataset, per case
    skullrecon release RUN --method mae_d                   # a finished run's model into models/, with its card
    skullrecon export mae_d_gpu --bundle DIR                # a released model as a MONAI bundle
    skullrecon metrics --pred P --gt G --defective D       # DSC, boundary DSC, HD95 as JSON
    skullrecon synthetic OUT --dataset skullbreak           # a synthetic dataset in the real layout
    skullrecon download skullfix --dest data                # published archives, verified and extracted

Exit codes: 0 done; 2 bad input or output (one line on stderr naming the file, nothing
replaced); 3 reconstruct wrote its outputs but the implant is empty or tiny (a complete skull,
nothing to fill): check before printing; 1 an unexpected internal error (one line; set
SKULLRECON_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import Executor
from pathlib import Path

__all__ = ["main"]


def _reconstruct(args: argparse.Namespace) -> int:
    from skullrecon.io import read_volume

    # the skull is read while torch is imported: on 2 cores the read (about 1.1 s for a 512x512x237
    # SkullFix skull) then costs about 0.15 s of wall time (handing the array over)
    with _beside() as pool:
        reading = pool.submit(read_volume, args.defective)
        from skullrecon.infer import reconstruct_file
        from skullrecon.release import resolve_model, resolve_refiner, resolve_surface

        model, sha256 = resolve_model(args.model)
        refiner = resolve_refiner(args.model, args.refiner)
        surface = resolve_surface(args.model, args.refiner)
        volume = reading.result()
    result = reconstruct_file(args.defective, model, args.out, device=args.device, stl=not args.no_stl, sha256=sha256,
                              volume=volume, refiner=refiner, surface=surface)
    print(json.dumps(result, indent=2))
    for warning in result["warnings"]:  # empty implant, or a skull with nothing to fill
        print(f"warning: {warning}", file=sys.stderr)
    return 3 if result["warnings"] else 0


def _beside() -> Executor:
    """One worker beside this process: a forked process where fork is safe (Linux), else a thread.
    Importing torch holds the GIL most of its 1.8 s: a thread reading the skull beside it slowed both
    (2.6 s for the two, measured), a process does not (2.1 s, the array's hand-over included)."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    if sys.platform == "linux":
        import multiprocessing

        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(max_workers=1)


def _models(args: argparse.Namespace) -> int:
    from skullrecon.release import headline, models_dir, released

    cards = released()
    if args.json:
        print(json.dumps([headline(c) for c in cards], indent=2))
        return 0
    if not cards:
        print(f"no released models in {models_dir()}")
        return 0
    width = max(12, *(len(c["name"]) for c in cards))
    print(f"{'name':<{width}} {'method':<14} {'grid':>4} {'test DSC':>9} {'HD95 mm':>8} {'new defects':>11} {'MB':>6}  "
          "sha256")
    for h in map(headline, cards):
        print(f"{h['name']:<{width}} {h['method']:<14} {h['grid']:>4} {h['test_dsc']:>9.3f} {h['test_hd95']:>8.2f} "
              f"{h['generalisation_dsc'] if h['generalisation_dsc'] is not None else float('nan'):>11.3f} "
              f"{h['size_mb']:>6.2f}  {h['sha256']}")
    print(f"(cards: {models_dir()}/<name>.md; test DSC: mean over each card's test cases)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from skullrecon.evaluate import evaluate_model, summary_rows
    from skullrecon.release import resolve_model, resolve_refiner, resolve_surface

    model, sha256 = resolve_model(args.model)
    refiner = resolve_refiner(args.model, args.refiner)
    surface = resolve_surface(args.model, args.refiner)
    table = evaluate_model(model, sha256, args.data, ids=args.ids, out_csv=args.out, workers=args.workers,
                           device=args.device, margin_mm=args.margin_mm, progress=not args.quiet, refiner=refiner,
                           surface=surface)
    print(json.dumps({"model": str(model), "refiner": str(refiner[0]) if refiner else None,
                      "surface": surface is not None, "per_case": str(args.out),
                      **summary_rows(table)}, indent=2))
    return 0


def _release(args: argparse.Namespace) -> int:
    from skullrecon.release import release_from_run

    card = release_from_run(args.run, args.method, name=args.name, dataset=args.dataset, out=args.out,
                            epochs_chosen=args.epochs_chosen)
    print(card)
    return 0


def _export(args: argparse.Namespace) -> int:
    from skullrecon.bundle import export_bundle

    print(export_bundle(args.name, args.bundle))
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from skullrecon.metrics import metrics_for_files

    result = metrics_for_files(args.pred, args.gt, args.defective, margin_mm=args.margin_mm)
    # strict JSON: an undefined HD95 (empty prediction) is null, not NaN
    values = {k: (None if result[k] != result[k] else result[k]) for k in ("dsc", "bdsc", "hd95")}
    print(json.dumps(values))
    return 0


def _shape_model(args: argparse.Namespace) -> int:
    from skullrecon.shape_model import build_shape_model

    model = build_shape_model(args.skulls, step_deg=args.step_deg, n_modes=args.modes, noise_mm=args.noise_mm,
                              log=lambda line: print(line, file=sys.stderr))
    model.save(args.out)
    print(args.out)
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from skullrecon.synthetic import generate_dataset

    summary = generate_dataset(args.out, dataset=args.dataset, n_train=args.n_train, n_test=args.n_test,
                               shape=tuple(args.shape), spacing=tuple(args.spacing), seed=args.seed)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _download(args: argparse.Namespace) -> int:
    from skullrecon.download import fetch_dataset

    root = fetch_dataset(args.dataset, args.dest, progress=not args.quiet)
    print(root)
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line too, with the same exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from skullrecon import __version__

    parser = _Parser(prog="skullrecon", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"skullrecon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    rec = sub.add_parser("reconstruct", help="implant volume and STL mesh for one defective skull")
    rec.add_argument("defective", type=Path, help="defective skull, NRRD or NIfTI, binary")
    rec.add_argument("--model", help="a released model's name (skullrecon models) or a model file written by the "
                     "pipeline (results/<run>/models/<method>.pt); default: the released MAE (D) with its "
                     "second stage (mae_d_gpu_surface)")
    rec.add_argument("--out", type=Path, required=True, help="output folder")
    rec.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda")
    rec.add_argument("--no-stl", action="store_true", help="skip the STL mesh")
    rec.add_argument("--refiner", help="the second stage: a refiner file, surface (the skull's own surfaces continued "
                     "over the hole, no network), or none for the first stage alone; default: the one the model's "
                     "card names (a two-stage release), else none")
    rec.set_defaults(func=_reconstruct)

    mod = sub.add_parser("models", help="the released models (models/) with their cards' headline numbers")
    mod.add_argument("--json", action="store_true", help="as JSON")
    mod.set_defaults(func=_models)

    ev = sub.add_parser("evaluate", help="score a model on a dataset: per-case DSC, boundary DSC, HD95 as CSV")
    ev.add_argument("--model", required=True, help="a released model's name or a model file")
    ev.add_argument("--data", type=Path, required=True,
                    help="a split folder of the SkullBreak/SkullFix layout (defective_skull/, implant/)")
    ev.add_argument("--ids", nargs="+", help="only these case ids (e.g. 000 004); default all")
    ev.add_argument("--out", type=Path, required=True, help="per-case CSV to write")
    ev.add_argument("--workers", type=int, help="cases scored side by side (default: one per CPU core)")
    ev.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    ev.add_argument("--margin-mm", type=float, default=10.0, help="boundary band width in mm (default 10)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.add_argument("--refiner", help="the second stage: a refiner file, surface, or none; default: the model card's, "
                    "else none")
    ev.set_defaults(func=_evaluate)

    rel = sub.add_parser("release", help="publish a finished run's model into models/ with its model card")
    rel.add_argument("run", type=Path, help="a finished run folder, results/<run>")
    rel.add_argument("--method", required=True, help="mae_d, mae_nd or a baseline (unet, ...)")
    rel.add_argument("--name", help="release name (default: the method)")
    rel.add_argument("--dataset", default="skullfix", help="the run's dataset whose test metrics the card gives")
    rel.add_argument("--out", type=Path, help="models folder (default: the repository's models/)")
    rel.add_argument("--epochs-chosen", default="", help="one sentence: how the epochs were chosen")
    rel.set_defaults(func=_release)

    exp = sub.add_parser("export", help="a released model as a MONAI bundle (python -m monai.bundle run)")
    exp.add_argument("name", help="a released model's name (skullrecon models)")
    exp.add_argument("--bundle", type=Path, required=True, help="the bundle folder to write (new or empty)")
    exp.set_defaults(func=_export)

    met = sub.add_parser("metrics", help="DSC, boundary DSC and HD95 (mm) of one implant, as JSON")
    met.add_argument("--pred", type=Path, required=True, help="predicted implant")
    met.add_argument("--gt", type=Path, required=True, help="ground-truth implant")
    met.add_argument("--defective", type=Path, required=True, help="defective skull (for the boundary band)")
    met.add_argument("--margin-mm", type=float, default=10.0, help="boundary band width in mm (default 10)")
    met.set_defaults(func=_metrics)

    shp = sub.add_parser("shape-model", help="a shape model of healthy skulls for the surface stage (.npz)")
    shp.add_argument("skulls", type=Path, nargs="+", help="complete (healthy) skulls, NRRD or NIfTI, binary")
    shp.add_argument("--out", type=Path, required=True, help="the model file to write (.npz)")
    shp.add_argument("--step-deg", type=float, default=2.0, help="the chart's step in degrees (default 2)")
    shp.add_argument("--modes", type=int, default=None, help="principal modes kept (default all: one fewer than "
                     "the skulls)")
    shp.add_argument("--noise-mm", type=float, default=4.0, help="the rays' noise the fit assumes (default 4 mm)")
    shp.set_defaults(func=_shape_model)

    syn = sub.add_parser("synthetic", help="write a synthetic dataset in the SkullBreak/SkullFix layout")
    syn.add_argument("out", type=Path)
    syn.add_argument("--dataset", choices=["skullbreak", "skullfix"], default="skullbreak")
    syn.add_argument("--n-train", type=int, default=4)
    syn.add_argument("--n-test", type=int, default=2)
    syn.add_argument("--shape", type=int, nargs=3, default=[112, 112, 112])
    syn.add_argument("--spacing", type=float, nargs=3, default=[1.8, 1.8, 1.8])
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=_synthetic)

    dl = sub.add_parser("download", help="download, verify and extract a dataset's published archives")
    dl.add_argument("dataset", help="skullbreak, skullfix or skullfix-figshare (see docs/datasets.md)")
    dl.add_argument("--dest", type=Path, default=Path("data"), help="download and extraction root (default data)")
    dl.add_argument("--quiet", action="store_true", help="no progress bars")
    dl.set_defaults(func=_download)
    return parser


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    text = " ".join(str(err).split())  # multi-line messages (registry problems, mirrors) on one line
    return text or type(err).__name__


def _bad_input(err: BaseException) -> bool:
    """Bad input or a failed download, told in one line. Only the commands that download import
    :mod:`skullrecon.download` (0.2 s that ``reconstruct`` does not pay), so only they can raise its error."""
    download = sys.modules.get("skullrecon.download")
    return isinstance(err, (ValueError, OSError)) or (download is not None and isinstance(err, download.DownloadError))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"skullrecon {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - bad input: one clear line; a bug: one line, the traceback on request
        if _bad_input(err):
            print(f"skullrecon {args.command}: error: {_one_line(err)}", file=sys.stderr)
            return 2
        if os.environ.get("SKULLRECON_DEBUG"):
            raise
        print(f"skullrecon {args.command}: internal error: {type(err).__name__}: {_one_line(err)} "
              "(set SKULLRECON_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def run() -> None:
    """The ``skullrecon`` console script: :func:`main`, then an immediate exit. Python's own shutdown
    of a process that imported torch took 0.5-0.65 s on 2 cores (a tenth of ``reconstruct``) with
    nothing left to do: every output is written and closed by then, the streams are flushed here."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
