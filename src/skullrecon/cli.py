"""The ``skullrecon`` command line: single-case use outside the workflow.

    skullrecon reconstruct DEFECTIVE --model M --out DIR   # implant volume + STL for one skull
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
from pathlib import Path

__all__ = ["main"]


def _reconstruct(args: argparse.Namespace) -> int:
    from skullrecon.infer import reconstruct_file

    result = reconstruct_file(args.defective, args.model, args.out, device=args.device, stl=not args.no_stl)
    print(json.dumps(result, indent=2))
    for warning in result["warnings"]:  # empty implant, or a skull with nothing to fill
        print(f"warning: {warning}", file=sys.stderr)
    return 3 if result["warnings"] else 0


def _metrics(args: argparse.Namespace) -> int:
    from skullrecon.metrics import metrics_for_files

    result = metrics_for_files(args.pred, args.gt, args.defective, margin_mm=args.margin_mm)
    # strict JSON: an undefined HD95 (empty prediction) is null, not NaN
    values = {k: (None if result[k] != result[k] else result[k]) for k in ("dsc", "bdsc", "hd95")}
    print(json.dumps(values))
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
    parser = _Parser(prog="skullrecon", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    rec = sub.add_parser("reconstruct", help="implant volume and STL mesh for one defective skull")
    rec.add_argument("defective", type=Path, help="defective skull, NRRD or NIfTI, binary")
    rec.add_argument("--model", type=Path, required=True, help="a model file written by the pipeline")
    rec.add_argument("--out", type=Path, required=True, help="output folder")
    rec.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda")
    rec.add_argument("--no-stl", action="store_true", help="skip the STL mesh")
    rec.set_defaults(func=_reconstruct)

    met = sub.add_parser("metrics", help="DSC, boundary DSC and HD95 (mm) of one implant, as JSON")
    met.add_argument("--pred", type=Path, required=True, help="predicted implant")
    met.add_argument("--gt", type=Path, required=True, help="ground-truth implant")
    met.add_argument("--defective", type=Path, required=True, help="defective skull (for the boundary band)")
    met.add_argument("--margin-mm", type=float, default=10.0, help="boundary band width in mm (default 10)")
    met.set_defaults(func=_metrics)

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


def main(argv: list[str] | None = None) -> int:
    from skullrecon.download import DownloadError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, DownloadError) as err:  # bad input: one clear line, no traceback
        print(f"skullrecon {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"skullrecon {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a bug: still one line, the traceback on request
        if os.environ.get("SKULLRECON_DEBUG"):
            raise
        print(f"skullrecon {args.command}: internal error: {type(err).__name__}: {_one_line(err)} "
              "(set SKULLRECON_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
