from __future__ import annotations

import numpy as np
import pytest

from skullrecon.augment import AugmentConfig, augment_skull

from conftest import shell


def test_identity_settings_return_the_skull():
    skull = shell((40, 40, 40), (16, 14, 12), 3)
    cfg = AugmentConfig(flip_axes=(), rotate_deg=0.0, scale=0.0, elastic=0.0)
    np.testing.assert_array_equal(augment_skull(skull, cfg, np.random.default_rng(0)), skull)


def test_flip_only_mirrors_along_the_axis():
    skull = np.zeros((20, 20, 20), bool)
    skull[2:6, 5:15, 5:15] = True
    cfg = AugmentConfig(flip_axes=(0,), rotate_deg=0.0, scale=0.0, elastic=0.0)
    outs = {augment_skull(skull, cfg, np.random.default_rng(s)).tobytes() for s in range(8)}
    assert outs == {skull.tobytes(), skull[::-1].tobytes()}


def test_small_affine_and_elastic_keep_volume_and_are_seeded():
    skull = shell((48, 48, 48), (20, 18, 16), 4)
    cfg = AugmentConfig()
    a = augment_skull(skull, cfg, np.random.default_rng(1))
    b = augment_skull(skull, cfg, np.random.default_rng(1))
    c = augment_skull(skull, cfg, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, skull)
    assert a.sum() == pytest.approx(skull.sum(), rel=0.2)  # scale <= 5 % changes volume by < 16 %


def test_unknown_setting_is_rejected():
    with pytest.raises(ValueError, match="rotate"):
        AugmentConfig.from_dict({"rotate": 3})
