"""Dataset adapters: case listing for both layouts and the all-problems-at-once validation.

Every broken file is made from a valid synthetic case, so each test also shows that the
untouched files pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import nrrd
import numpy as np
import pytest

from skullrecon.datasets import DatasetError, Layout, list_cases, list_healthy, validate_cases
from skullrecon.io import write_volume
from skullrecon.preprocess import preprocess_split
from skullrecon.synthetic import generate_dataset

SHAPE = (40, 40, 32)
SPACING = (4.0, 4.0, 5.0)
TYPES = ["bilateral", "frontoorbital"]
SKULLFIX = Layout(train="training_set", test="test_set")
SKULLBREAK = Layout(train="training", test="testing", types=tuple(TYPES))


@pytest.fixture
def skullfix(tmp_path) -> Path:
    root = tmp_path / "skullfix"
    generate_dataset(root, "skullfix", n_train=7, n_test=2, shape=SHAPE, spacing=SPACING, seed=5)
    return root


@pytest.fixture(scope="module")
def skullbreak(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("skullbreak")
    generate_dataset(root, "skullbreak", n_train=3, n_test=2, shape=SHAPE, spacing=SPACING, seed=6,
                     defect_types=TYPES)
    return root


def _rel(paths, root):
    return [str(Path(p).relative_to(root)) if p is not None else None for p in paths]


def test_skullfix_layout_lists_triplets(skullfix):
    train = list_cases(skullfix, SKULLFIX, "train")
    assert [c.name for c in train] == [f"{i:03d}" for i in range(7)]
    assert all(c.defect_type is None for c in train)
    assert _rel([c.defective for c in train], skullfix) == [f"training_set/defective_skull/{i:03d}.nrrd" for i in range(7)]
    assert _rel([c.implant for c in train], skullfix) == [f"training_set/implant/{i:03d}.nrrd" for i in range(7)]
    assert _rel([c.complete for c in train], skullfix) == [f"training_set/complete_skull/{i:03d}.nrrd" for i in range(7)]
    test = list_cases(skullfix, SKULLFIX, "test")
    assert [c.name for c in test] == ["000", "001"]
    assert _rel([c.implant for c in test], skullfix) == ["test_set/implant/000.nrrd", "test_set/implant/001.nrrd"]
    healthy = list_healthy(skullfix, SKULLFIX)
    assert [i for i, _ in healthy] == [f"{i:03d}" for i in range(7)]
    assert _rel([p for _, p in healthy], skullfix) == [f"training_set/complete_skull/{i:03d}.nrrd" for i in range(7)]
    validate_cases(train, healthy)
    validate_cases(test)


def test_skullbreak_layout_has_one_case_per_type_and_skull(skullbreak):
    train = list_cases(skullbreak, SKULLBREAK, "train")
    expected = [f"{t}_{i:03d}" for t in TYPES for i in range(3)]
    assert sorted(c.name for c in train) == sorted(expected)
    for c in train:
        assert _rel([c.defective, c.implant, c.complete], skullbreak) == [
            f"training/defective_skull/{c.defect_type}/{c.case_id}.nrrd",
            f"training/implant/{c.defect_type}/{c.case_id}.nrrd",
            f"training/complete_skull/{c.case_id}.nrrd",
        ]
    test = list_cases(skullbreak, SKULLBREAK, "test")
    assert sorted(c.name for c in test) == sorted(f"{t}_{i:03d}" for t in TYPES for i in range(2))
    assert [i for i, _ in list_healthy(skullbreak, SKULLBREAK)] == ["000", "001", "002"]
    validate_cases(train, list_healthy(skullbreak, SKULLBREAK))


def test_skullbreak_test_split_without_ground_truth(skullbreak, tmp_path):
    """A test split with no implant files lists implant=None (not an error unless required)."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(skullbreak, root)
    shutil.rmtree(root / "testing" / "implant")
    test = list_cases(root, SKULLBREAK, "test")
    assert all(c.implant is None for c in test)
    validate_cases(test, require_ground_truth=False)
    with pytest.raises(DatasetError, match="no matching implant"):
        validate_cases(test, require_ground_truth=True)


def test_test_ids_split_one_folder(skullfix):
    layout = Layout.from_dict({"train": "training_set", "test": "training_set", "test_ids": [2, 5]})
    assert layout.test_ids == ("002", "005")
    test = list_cases(skullfix, layout, "test")
    train = list_cases(skullfix, layout, "train")
    healthy = list_healthy(skullfix, layout)
    assert [c.name for c in test] == ["002", "005"]
    assert all(c.defective.parent.parent.name == "training_set" for c in test)
    assert [c.name for c in train] == ["000", "001", "003", "004", "006"]
    assert [i for i, _ in healthy] == ["000", "001", "003", "004", "006"]


def test_test_ids_split_for_skullbreak_types(skullbreak):
    layout = Layout(train="training", test="training", types=tuple(TYPES), test_ids=("001",))
    assert sorted(c.name for c in list_cases(skullbreak, layout, "test")) == ["bilateral_001", "frontoorbital_001"]
    train = list_cases(skullbreak, layout, "train")
    assert {c.case_id for c in train} == {"000", "002"} and len(train) == 4
    assert [i for i, _ in list_healthy(skullbreak, layout)] == ["000", "002"]


def test_test_ids_absent_from_the_folder_is_an_error(skullfix):
    """A recorded split must not shrink silently when some of its ids are not on disk."""
    layout = Layout(train="training_set", test="training_set", test_ids=("002", "042"))
    with pytest.raises(DatasetError, match=r"042") as err:
        list_cases(skullfix, layout, "test")
    assert "training_set" in str(err.value)


def test_missing_folders_name_the_folder(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "training_set" / "defective_skull"))):
        list_cases(tmp_path, SKULLFIX, "train")
    (tmp_path / "training_set" / "defective_skull").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no NNN.nrrd cases"):
        list_cases(tmp_path, SKULLFIX, "train")
    with pytest.raises(DatasetError, match="no healthy skulls"):
        list_healthy(tmp_path, SKULLFIX)


def _break_dataset(root: Path) -> dict[str, tuple[Path, str]]:
    """Damage one file of each of the seven training cases; returns what the error must name."""
    split = root / "training_set"
    broken = {}

    # 000: truncated NRRD (defective skull)
    path = split / "defective_skull" / "000.nrrd"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    broken["truncated"] = (path, "cannot read NRRD")

    # 001: implant with a value 2
    path = split / "implant" / "001.nrrd"
    data, header = nrrd.read(str(path))
    data[data.shape[0] // 2, 0, 0] = 2
    nrrd.write(str(path), data, header)
    broken["non-binary"] = (path, "not binary")

    # 002: complete skull stored as float with a NaN
    path = split / "complete_skull" / "002.nrrd"
    data, header = nrrd.read(str(path))
    data = data.astype(np.float32)
    data[1, 1, 1] = np.nan
    header.pop("type", None)
    nrrd.write(str(path), data, header)
    broken["nan"] = (path, "NaN")

    # 003: defective skull with 20 mm voxels (plausible to the reader, not for a skull CT)
    path = split / "defective_skull" / "003.nrrd"
    data, header = nrrd.read(str(path))
    write_volume(path, data, spacing=(20.0, 20.0, 20.0))
    broken["spacing"] = (path, "exceeds")

    # 004: implant on another grid than its defective skull
    path = split / "implant" / "004.nrrd"
    data, header = nrrd.read(str(path))
    write_volume(path, data[:-2], spacing=SPACING)
    broken["shape"] = (path, "does not match the defective skull")

    # 005: implant missing
    path = split / "implant" / "005.nrrd"
    path.unlink()
    broken["missing"] = (path, "implant file missing")

    # 006: empty defective skull
    path = split / "defective_skull" / "006.nrrd"
    data, header = nrrd.read(str(path))
    nrrd.write(str(path), np.zeros_like(data), header)
    broken["empty"] = (path, "empty")
    return broken


def test_validate_reports_every_problem_with_its_file(skullfix):
    broken = _break_dataset(skullfix)
    cases = list_cases(skullfix, SKULLFIX, "train")
    healthy = list_healthy(skullfix, SKULLFIX)
    with pytest.raises(DatasetError) as err:
        validate_cases(cases, healthy)
    message = str(err.value)
    lines = message.splitlines()[1:]
    for kind, (path, what) in broken.items():
        hits = [line for line in lines if line.startswith(f"{path}:")]
        assert hits, f"{kind}: {path} not named in\n{message}"
        assert any(what in line for line in hits), f"{kind}: '{what}' not said about {path}:\n{message}"
    # an intact file is only named beside the broken file it disagrees with (the 20 mm defective
    # skull makes its own implant and complete skull mismatch); nothing is reported twice
    broken_paths = {str(p) for p, _ in broken.values()}
    for line in lines:
        blamed, what = line.split(": ", 1)
        assert blamed in broken_paths or ("does not match" in what and str(broken["spacing"][0]) in what), line
    assert len(lines) == len(set(lines))
    assert message.startswith(f"{len(lines)} problem(s)")
    # the NaN complete skull is both a healthy skull and a case's complete skull: read once
    nan_path = str(broken["nan"][0])
    assert sum(line.startswith(nan_path) for line in lines) == 1


def test_preprocess_refuses_a_broken_dataset_before_writing(skullfix, tmp_path):
    _break_dataset(skullfix)
    out = tmp_path / "pre"
    with pytest.raises(DatasetError) as err:
        preprocess_split(skullfix, SKULLFIX, "train", out, grid=16, log=lambda *_: None)
    assert "training_set/defective_skull/000.nrrd" in str(err.value)
    assert not out.exists() or not any(out.rglob("*"))


def test_preprocess_writes_every_case_of_a_valid_dataset(skullfix, tmp_path):
    """The counterpart of the test above: the same call on intact data writes everything."""
    out = tmp_path / "pre"
    summary = preprocess_split(skullfix, SKULLFIX, "train", out, grid=16, log=lambda *_: None)
    assert summary == {"cases": 7, "healthy": 7}
    assert sorted(p.name for p in (out / "cases").glob("*.npz")) == [f"{i:03d}.npz" for i in range(7)]
    assert sorted(p.name for p in (out / "healthy").glob("*.npz")) == [f"{i:03d}.npz" for i in range(7)]
    assert (out / "cases.tsv").read_text().count("\n") == 8


def _move_complete_under_types(root: Path, split: str, types) -> None:
    import shutil

    folder = root / split / "complete_skull"
    for f in sorted(folder.glob("*.nrrd")):
        for t in types:
            (folder / t).mkdir(exist_ok=True)
            shutil.copy(f, folder / t / f.name)
        f.unlink()


def test_complete_skulls_under_per_type_folders(skullbreak, tmp_path):
    """complete_skull/<type>/NNN.nrrd, as the paper's authors' code reads them."""
    import shutil

    root = tmp_path / "pertype"
    shutil.copytree(skullbreak, root)
    _move_complete_under_types(root, "training", TYPES)
    train = list_cases(root, SKULLBREAK, "train")
    assert len(train) == 6
    for c in train:
        assert _rel([c.complete], root) == [f"training/complete_skull/{c.defect_type}/{c.case_id}.nrrd"]
    healthy = list_healthy(root, SKULLBREAK)
    assert [i for i, _ in healthy] == ["000", "001", "002"]  # one per skull, not one per type
    assert all(p.parent.name == TYPES[0] for _, p in healthy)
    validate_cases(train, healthy)


def _participants_copy(skullbreak: Path, root: Path) -> None:
    """The test folder as handed to challenge participants: <type>/NNN.nrrd, defective only."""
    import shutil

    shutil.copytree(skullbreak, root)
    test = root / "testing"
    for t in TYPES:
        shutil.move(str(test / "defective_skull" / t), str(test / t))
    for sub in ("defective_skull", "implant", "complete_skull"):
        shutil.rmtree(test / sub)


def test_participants_test_folder_and_the_recorded_fallback(skullbreak, tmp_path):
    from skullrecon.datasets import scored_on

    root = tmp_path / "participants"
    _participants_copy(skullbreak, root)
    test = list_cases(root, SKULLBREAK, "test")
    assert sorted(c.name for c in test) == sorted(f"{t}_{i:03d}" for t in TYPES for i in range(2))
    assert all(c.implant is None and c.complete is None for c in test)
    assert _rel([test[0].defective], root) == [f"testing/{test[0].defect_type}/{test[0].case_id}.nrrd"]
    assert scored_on(root, SKULLBREAK) == "the test folder 'testing'"

    # no ground truth there: the recorded training skulls are scored instead, and left out of training
    layout = Layout.from_dict({"train": "training", "test": "testing", "types": TYPES, "fallback_test_ids": [2]})
    fallback = list_cases(root, layout, "test")
    assert sorted(c.name for c in fallback) == ["bilateral_002", "frontoorbital_002"]
    assert all(c.implant is not None and c.implant.exists() for c in fallback)
    assert {c.case_id for c in list_cases(root, layout, "train")} == {"000", "001"}
    assert [i for i, _ in list_healthy(root, layout)] == ["000", "001"]
    assert scored_on(root, layout) == "held-out training skulls 002 of 'training' (the test folder has no ground truth)"
    # with ground truth in the test folder the fallback is not used
    assert {c.case_id for c in list_cases(skullbreak, layout, "test")} == {"000", "001"}
    assert scored_on(skullbreak, layout) == "the test folder 'testing'"
