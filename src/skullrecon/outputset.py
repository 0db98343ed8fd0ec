"""The outputs of one ``skullrecon reconstruct`` run, written into ``--out`` as one set.

Files are written into a hidden staging folder inside ``--out`` (same file system); then the
manifest is marked unfinished, the previous run's outputs are removed, the new ones renamed into
place, and the manifest listing every file with its SHA-256 is written last. The finished manifest
is what makes a folder finished: a run killed half way leaves an unfinished one (and never old and
new files side by side), and :func:`read_manifest` refuses a folder that is unfinished or whose
files do not match it. Only files this tool wrote, by name and listed in the
manifest, are ever replaced or removed; anything else in ``--out`` is left alone, and an input
that a run would replace is refused before any work is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from skullrecon.io import atomic_path

__all__ = ["MANIFEST", "OUTPUT_NAMES", "OutputError", "OutputSet", "prepare_out_dir", "read_manifest"]

MANIFEST = "skullrecon-reconstruct.json"
OUTPUT_NAMES = ("implant.nrrd", "implant.nii.gz", "reconstruction.nrrd", "reconstruction.nii.gz", "implant.stl")
_STAGING = ".skullrecon-staging-"


class OutputError(ValueError):
    """An output folder that cannot be used safely; the message names the path."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _listed(out: Path) -> dict[str, Any]:
    """Files the manifest in ``out`` says this tool wrote (empty without a readable manifest)."""
    try:
        files = json.loads((out / MANIFEST).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in files.items() if k in OUTPUT_NAMES} if isinstance(files, dict) else {}


def prepare_out_dir(out_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Check ``out_dir`` before any work: a writable folder (created if absent) where a run
    replaces nothing it did not write, and where no input would be replaced.

    Raises:
        OutputError: ``out_dir`` is a file or not writable; an output name is taken by a file
            not listed in the manifest; an input is one of the files a run replaces.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: --out exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=_STAGING)  # a real write: catches read-only mounts
        probe.close()
    except OSError as err:
        raise OutputError(f"{out}: cannot write into the output folder ({err.strerror or err})") from None
    listed = _listed(out)
    for inp in inputs:
        for name in (*OUTPUT_NAMES, MANIFEST):
            target = out / name
            if target.exists() and Path(inp).exists() and os.path.samefile(target, inp):
                raise OutputError(
                    f"{inp}: this input is {target}, which the run would replace; copy it elsewhere or choose another --out"
                )
    for name in OUTPUT_NAMES:
        target = out / name
        if (target.exists() or target.is_symlink()) and name not in listed:
            raise OutputError(
                f"{target}: exists but was not written by skullrecon reconstruct (not listed in {MANIFEST}); "
                "move it away or choose another --out"
            )
    return out


class OutputSet:
    """A staging folder inside ``out_dir``; :meth:`commit` moves its files into place as one set."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out = Path(out_dir)
        for old in self.out.glob(f"{_STAGING}*"):  # left by a killed run: ours by name
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        self.stage = Path(tempfile.mkdtemp(prefix=_STAGING, dir=self.out))

    def path(self, name: str) -> Path:
        if name not in OUTPUT_NAMES:
            raise ValueError(f"{name!r} is not an output name of skullrecon reconstruct")
        return self.stage / name

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def commit(self, info: dict[str, Any]) -> dict[str, Path]:
        """Replace the previous set by the staged files; the manifest (with ``info``) goes last."""
        names = sorted(p.name for p in self.stage.iterdir() if p.name in OUTPUT_NAMES)
        files = {n: {"sha256": _sha256(self.stage / n), "bytes": (self.stage / n).stat().st_size} for n in names}
        old = _listed(self.out)
        # From here until the last write the manifest says "not finished" while still claiming
        # every name of the old and new sets as ours, so a rerun after a kill may replace them.
        _write_manifest(self.out, {"complete": False, "files": {n: None for n in sorted({*old, *names})}})
        for name in old:  # old files first, so a kill never leaves old and new side by side
            (self.out / name).unlink(missing_ok=True)
        for name in names:
            _move(self.stage / name, self.out / name)
        _write_manifest(self.out, {"tool": "skullrecon reconstruct", "complete": True,
                                   "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info, "files": files})
        self.discard()
        return {n: self.out / n for n in names}


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, default=str) + "\n")


def _move(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a finished ``--out`` folder, after checking every listed file against it.

    Raises:
        OutputError: no manifest (the run did not finish), or a listed file missing or changed.
    """
    out = Path(out_dir)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        raise OutputError(f"{out}: no {MANIFEST}: the reconstruction there did not finish") from None
    except (OSError, ValueError) as err:
        raise OutputError(f"{out / MANIFEST}: unreadable manifest ({err})") from None
    if manifest.get("complete") is not True:
        raise OutputError(f"{out}: {MANIFEST} says the reconstruction there did not finish")
    for name, entry in manifest.get("files", {}).items():
        path = out / name
        if not path.is_file() or _sha256(path) != entry.get("sha256"):
            raise OutputError(f"{path}: missing or changed since {MANIFEST} was written")
    return manifest
