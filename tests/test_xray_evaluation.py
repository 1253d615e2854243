"""X-ray evaluation: image metrics and the bone-suppression numbers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.xray.evaluation import bone_suppression, image_metrics


def test_metrics_and_bone_suppression() -> None:
    rng = np.random.default_rng(0)
    body = np.ones((24, 24), bool)
    soft = 2.0 + rng.random((24, 24))
    bone = np.zeros((24, 24))
    bone[8:16, 4:20] = 1.0
    perfect = image_metrics(soft, soft, body)
    assert perfect["mae"] == 0.0 and perfect["ssim"] == pytest.approx(1.0) and perfect["psnr"] == float("inf")
    worse = image_metrics(soft + 0.3 * bone, soft, body)
    assert worse["mae"] == pytest.approx(0.3 * bone.mean()) and worse["ssim"] < 1.0
    assert bone_suppression(soft, soft, bone, body)["bone_leak"] == pytest.approx(0.0, abs=1e-12)
    assert bone_suppression(soft + bone, soft, bone, body)["bone_leak"] == pytest.approx(1.0)
    assert bone_suppression(soft + 0.25 * bone, soft, bone, body)["bone_leak"] == pytest.approx(0.25)
