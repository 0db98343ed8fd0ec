"""The models committed in ``models/``: each file is the one its card describes, the releases stay under
35 MB (seven networks of two runs, about 4.5 MB each with their TorchScript copy: the repository also travels
whole to a lent GPU machine, 64 MiB at most), ``reconstruct`` defaults to the released GPU-trained MAE (D),
and (with the real SkullFix training set beside the repository, ``../shared/data/skullfix``) each model
scores on its run's test skulls what its card says (counts exactly, means to 1e-5 relative: another CPU's
floating point).

Skipped while nothing is released; the real-data check skips with its reason where the data are absent.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from skullrecon.release import models_dir, resolve_model

REPO = Path(__file__).resolve().parents[1]
CARDS = sorted((REPO / "models").glob("*.json"))
pytestmark = pytest.mark.skipif(not CARDS, reason="no released model in models/")


def _card(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("card_path", CARDS, ids=lambda p: p.stem)
def test_each_file_is_the_one_its_card_describes(card_path):
    card = _card(card_path)
    blob = (card_path.parent / card["file"]).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == card["sha256"] and len(blob) == card["file_bytes"]
    text = card_path.with_suffix(".md").read_text()
    assert card["sha256"] in text and "CC BY-NC-SA" in text and "CC BY-NC-SA" in card["licence"]
    training = card["training"]
    assert re.fullmatch(r"[0-9a-f]{40}", training["commit"]) and training["commit_dirty"] is False
    assert training["epochs_chosen"], "a release says how its epochs were chosen"
    assert card["metrics"]["test"]["cases"] == len(training["test_ids"])


def test_the_releases_fit_35_mb():
    assert sum((REPO / "models" / _card(p)["file"]).stat().st_size for p in CARDS) < 35e6


def test_reconstruct_defaults_to_the_released_mae_d_gpu():
    assert models_dir() == REPO / "models"
    path, sha256 = resolve_model(None)
    assert path == REPO / "models" / "mae_d_gpu.pt" and sha256 == _card(REPO / "models" / "mae_d_gpu.json")["sha256"]


@pytest.mark.slow  # about a minute per model: 14 real 512x512 skulls read, upsampled and scored
@pytest.mark.parametrize("card_path", CARDS, ids=lambda p: p.stem)
def test_evaluate_reproduces_the_card_on_the_real_test_skulls(card_path):
    from conftest import real_file
    from skullrecon.evaluate import evaluate_model, summary_rows

    card = _card(card_path)
    data = real_file("skullfix/training_set")
    table = evaluate_model(card_path.parent / card["file"], card["sha256"], data, ids=card["training"]["test_ids"],
                           workers=2, progress=False)
    summary = summary_rows(table)
    for key, value in card["metrics"]["test"].items():
        if key not in summary:
            continue
        if isinstance(value, float):
            # the card was scored on the release machine; another CPU's floating point moves the network's
            # output in the last bits (an AMD EPYC: MAE (D) mean DSC 0.83998607 vs the card's 0.83998596)
            assert summary[key] == pytest.approx(value, rel=1e-5), key
        else:
            assert summary[key] == value, key
