"""Per-subject dose evaluation helpers: the default target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.dose.evaluate import default_target

REPO = Path(__file__).resolve().parents[1]


def test_default_target_is_a_sphere_inside_the_body():
    body = np.zeros((40, 40, 30), bool)
    body[5:35, 5:35, 5:25] = True
    target = default_target(body, spacing_mm=(2.0, 2.0, 2.0), radius_mm=10.0)
    assert not (target & ~body).any()
    assert target.sum() == pytest.approx(4 / 3 * np.pi * 5**3, rel=0.1)  # 10 mm = 5 voxels radius
    np.testing.assert_allclose(np.argwhere(target).mean(0), np.argwhere(body).mean(0), atol=0.6)
