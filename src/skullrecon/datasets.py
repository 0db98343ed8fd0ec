"""Dataset adapters for the SkullBreak and SkullFix layouts.

Both datasets keep ``complete_skull/NNN.nrrd``, ``defective_skull[/<type>]/NNN.nrrd`` and
``implant[/<type>]/NNN.nrrd`` under one folder per split; SkullBreak has a defect-type level,
SkullFix has none. A downloaded copy, the synthetic dataset and the real SkullFix subset all go
through the same :func:`list_cases` and :func:`validate_cases`.

Two more layouts seen in the wild are read too: complete skulls under per-type folders
(``complete_skull/<type>/NNN.nrrd``, as the paper's authors' code reads them) and a SkullBreak test
folder as handed to challenge participants (``<type>/NNN.nrrd``: defective skulls only). Where a
test folder has no ground truth, ``fallback_test_ids`` names the training skulls scored instead,
and :func:`scored_on` says which was used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from skullrecon.io import Volume, VolumeError, read_volume

__all__ = ["Case", "Layout", "DatasetError", "list_cases", "list_healthy", "validate_cases", "resolve_layout", "scored_on"]

_ID = re.compile(r"^(\d+)\.nrrd$")


class DatasetError(ValueError):
    """One or more dataset files are unusable; the message lists every problem with its file."""


@dataclass(frozen=True)
class Layout:
    """How a dataset is laid out on disk.

    Args:
        train: folder of the training split under the dataset root.
        test: folder of the test split (may equal ``train`` when ``test_ids`` splits one folder).
        types: defect-type subfolders (SkullBreak) or None (SkullFix: no type level).
        test_ids: case ids taken as the test split from ``train`` (a fixed, recorded split);
            they are then excluded from training.
        fallback_test_ids: used only when the ``test`` folder has no ground truth (no
            ``implant`` folder, e.g. SkullBreak's test set as handed to participants): these
            training skulls become the test split instead, as ``test_ids`` would make them.
    """

    train: str
    test: str
    types: tuple[str, ...] | None = None
    test_ids: tuple[str, ...] | None = None
    fallback_test_ids: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Layout:
        types = d.get("types")
        test_ids = d.get("test_ids")
        fallback = d.get("fallback_test_ids")
        return cls(
            train=d["train"],
            test=d["test"],
            types=tuple(types) if types else None,
            test_ids=tuple(f"{int(i):03d}" for i in test_ids) if test_ids else None,
            fallback_test_ids=tuple(f"{int(i):03d}" for i in fallback) if fallback else None,
        )


def resolve_layout(root: str | Path, layout: Layout) -> Layout:
    """``layout`` itself, or, when its test folder has no ground truth and ``fallback_test_ids``
    is set, the layout scoring those training skulls instead (the same for both splits)."""
    if layout.fallback_test_ids is None or layout.test_ids is not None or _has_ground_truth(Path(root) / layout.test):
        return layout
    return Layout(layout.train, layout.train, layout.types, layout.fallback_test_ids)


def _has_ground_truth(split_dir: Path) -> bool:
    return (split_dir / "implant").is_dir() and any((split_dir / "implant").rglob("*.nrrd"))


def scored_on(root: str | Path, layout: Layout) -> str:
    """In words, which cases the test split of ``layout`` scores (for Table I)."""
    resolved = resolve_layout(root, layout)
    if resolved.test_ids is None:
        return f"the test folder '{resolved.test}'"
    ids = ", ".join(resolved.test_ids) if len(resolved.test_ids) <= 6 else (
        f"{resolved.test_ids[0]}-{resolved.test_ids[-1]} ({len(resolved.test_ids)} skulls)")
    why = " (the test folder has no ground truth)" if resolved is not layout else ""
    return f"held-out training skulls {ids} of '{resolved.train}'{why}"


@dataclass(frozen=True)
class Case:
    """One defective skull with its ground truth.

    ``name`` is unique within a split (``<type>_<id>`` for SkullBreak, ``<id>`` for SkullFix).
    ``implant`` and ``complete`` may be None where a split has no ground truth.
    """

    name: str
    case_id: str
    defect_type: str | None
    defective: Path
    implant: Path | None
    complete: Path | None


def _ids(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(m.group(1) for p in folder.iterdir() if (m := _ID.match(p.name)))


def _split_dir(root: Path, layout: Layout, split: str) -> Path:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return Path(root) / (layout.train if split == "train" else layout.test)


def _keep(case_id: str, layout: Layout, split: str) -> bool:
    if layout.test_ids is None:
        return True
    return (case_id in layout.test_ids) == (split == "test")


def list_cases(root: str | Path, layout: Layout, split: str) -> list[Case]:
    """Every defective skull of ``split`` with its implant and complete skull (where present).

    Raises:
        DatasetError: the split folder or its ``defective_skull`` folder is missing or empty.
    """
    layout = resolve_layout(root, layout)
    base = _split_dir(Path(root), layout, split)
    defective_dir = base / "defective_skull"
    if not defective_dir.is_dir() and layout.types and any((base / t).is_dir() for t in layout.types):
        defective_dir = base  # a test folder as handed to participants: <type>/NNN.nrrd only
    if not defective_dir.is_dir():
        raise DatasetError(f"{defective_dir}: folder not found (dataset root {root}, split {split})")
    cases = []
    for defect_type in layout.types or (None,):
        sub = Path(defect_type) if defect_type else Path()
        for case_id in _ids(defective_dir / sub):
            if not _keep(case_id, layout, split):
                continue
            implant = base / "implant" / sub / f"{case_id}.nrrd"
            complete = base / "complete_skull" / f"{case_id}.nrrd"
            if not complete.exists() and defect_type:  # complete_skull/<type>/NNN.nrrd
                complete = base / "complete_skull" / sub / f"{case_id}.nrrd"
            cases.append(
                Case(
                    name=f"{defect_type}_{case_id}" if defect_type else case_id,
                    case_id=case_id,
                    defect_type=defect_type,
                    defective=defective_dir / sub / f"{case_id}.nrrd",
                    implant=implant if implant.exists() or split == "train" else None,
                    complete=complete if complete.exists() else None,
                )
            )
    if not cases:
        raise DatasetError(f"{defective_dir}: no NNN.nrrd cases found for split {split}")
    if split == "test" and layout.test_ids is not None:
        missing = sorted(set(layout.test_ids) - {c.case_id for c in cases})
        if missing:  # a recorded split must not shrink silently
            raise DatasetError(f"{defective_dir}: test case id(s) {missing} of the layout's test_ids not found")
    return cases


def list_healthy(root: str | Path, layout: Layout, split: str = "train") -> list[tuple[str, Path]]:
    """The complete (healthy) skulls of a split: what the MAE trains on."""
    layout = resolve_layout(root, layout)
    folder = _split_dir(Path(root), layout, split) / "complete_skull"
    found = [(i, folder / f"{i}.nrrd") for i in _ids(folder) if _keep(i, layout, split)]
    if not found and layout.types:
        # complete_skull/<type>/NNN.nrrd: the same skull under every type; the first type's copy
        seen: dict[str, Path] = {}
        for t in layout.types:
            for i in _ids(folder / t):
                if _keep(i, layout, split):
                    seen.setdefault(i, folder / t / f"{i}.nrrd")
        found = sorted(seen.items())
    if not found:
        raise DatasetError(f"{folder}: no healthy skulls (NNN.nrrd) found")
    return found


def validate_cases(
    cases: Sequence[Case],
    healthy: Iterable[tuple[str, Path]] = (),
    max_spacing_mm: float = 5.0,
    require_ground_truth: bool = True,
    on_healthy: Callable[[str, Volume], None] | None = None,
    on_case: Callable[[Case, dict[str, Volume]], None] | None = None,
) -> None:
    """Read every file once and report all problems together.

    Checks: readable, 3-D, binary, no NaN, sane spacing, and within each case the same shape and
    spacing for defective skull, implant and complete skull; a missing implant is a problem when
    ``require_ground_truth``.

    Args:
        on_healthy: called with each usable healthy skull as it is read, so a caller can use the
            data without reading the file again.
        on_case: called with each case whose files are all usable, and its volumes read for it
            (``defective``, ``implant`` where present; a complete skull already read as a healthy
            one is not read again and not passed).

    Raises:
        DatasetError: listing every problem, one line per file (after the callbacks of the good ones).
    """
    problems: list[str] = []
    seen: dict[Path, tuple | None] = {}

    def check(path: Path) -> tuple[tuple | None, Volume | None]:
        """(shape, spacing) of a file, and its volume if it is read now and usable."""
        if path in seen:  # a complete skull is shared by every defect type and the healthy list
            return seen[path], None
        try:
            vol = read_volume(path)
        except VolumeError as err:
            problems.append(str(err))
            seen[path] = None
            return None, None
        bad = len(problems)
        if np.any(vol.spacing > max_spacing_mm):
            problems.append(f"{path}: voxel spacing {vol.spacing.round(3).tolist()} mm exceeds {max_spacing_mm} mm")
        if not vol.array.any():
            problems.append(f"{path}: volume is empty (no foreground voxels)")
        seen[path] = vol.shape, tuple(float(v) for v in np.round(vol.spacing, 4))
        return seen[path], vol if len(problems) == bad else None

    for case_id, path in healthy:
        _, vol = check(path)
        if vol is not None and on_healthy is not None:
            on_healthy(case_id, vol)
    for case in cases:
        before = len(problems)
        ref, defective = check(case.defective)
        volumes = {"defective": defective}
        files = [("implant", case.implant), ("complete skull", case.complete)]
        for label, path in files:
            if path is None:
                if label == "implant" and require_ground_truth:
                    problems.append(f"{case.defective}: no matching implant file for case {case.name}")
                continue
            if not path.exists():
                problems.append(f"{path}: {label} file missing for case {case.name}")
                continue
            geo, vol = check(path)
            if label == "implant":
                volumes["implant"] = vol
            if ref is not None and geo is not None and geo != ref:
                problems.append(
                    f"{path}: shape {geo[0]} / spacing {list(geo[1])} mm does not match the defective skull "
                    f"{case.defective} (shape {ref[0]} / spacing {list(ref[1])} mm)"
                )
        if on_case is not None and len(problems) == before and defective is not None:
            on_case(case, {k: v for k, v in volumes.items() if v is not None})
    if problems:
        raise DatasetError(f"{len(problems)} problem(s) in the dataset:\n" + "\n".join(problems))
