"""Shared fixtures: small seeded synthetic skulls written to tmp_path, and the real data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption("--order", default=None, metavar="reverse|random:SEED",
                     help="run the collected tests in reverse or in a seeded random order, to show that no test "
                          "depends on what ran before it")


def pytest_collection_modifyitems(config, items):
    order = config.getoption("--order")
    if order == "reverse":
        items.reverse()
    elif order and order.startswith("random:"):
        # files in a random order, and the tests of each file in a random order, the file's tests kept
        # together: a module-scoped fixture (the workflow test's DAG run, minutes) is still made once
        import random

        rng, by_file = random.Random(int(order.split(":", 1)[1])), {}
        for item in items:
            by_file.setdefault(item.nodeid.split("::")[0], []).append(item)
        groups = list(by_file.values())
        rng.shuffle(groups)
        for group in groups:
            rng.shuffle(group)
        items[:] = [item for group in groups for item in group]
    elif order:
        raise pytest.UsageError(f"--order must be reverse or random:SEED, got {order!r}")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A tiny SkullFix-like synthetic dataset (4 train, 2 test triplets)."""
    from skullrecon.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("skullfix")
    generate_dataset(root, "skullfix", n_train=4, n_test=2, shape=(80, 80, 64), spacing=(2.4, 2.4, 3.0), seed=3)
    return root


def real_file(name: str) -> Path:
    """A file of ../shared/data; skips the test with the reason when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real skull data not available: {path} is absent (see docs/paper-run.md, 'Real data on this machine')")
    return path


def shell(shape=(64, 64, 64), radii=(26, 22, 20), thickness=3.0) -> np.ndarray:
    """An ellipsoidal shell, the simplest skull."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    r = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, radii)))
    return (r <= 1) & (r >= 1 - thickness / min(radii))
