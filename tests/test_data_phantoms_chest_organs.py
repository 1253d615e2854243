"""The chest phantom's circulation and abdomen (pipeline/data/phantoms/chest_organs.py): contrast states."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.phantoms.chest_organs import CONTRAST_PHASES, draw_contrast


def test_contrast_states():
    draws = [draw_contrast(np.random.default_rng(i)) for i in range(300)]
    phases = {p: np.mean([d["phase"] == p for d in draws]) for p in CONTRAST_PHASES}
    assert all(abs(phases[p] - CONTRAST_PHASES[p]) < 0.1 for p in CONTRAST_PHASES)
    for d in draws:
        if d["phase"] == "none":
            assert d["left"] == d["right"] == d["vein"] == 40.0 and not d["bolus"]
        else:  # iodine: blood above the 100 HU at which the DRR's material split starts calling it bone
            assert d["left"] > 100.0 and d["right"] > 100.0
        if d["bolus"]:
            assert 700.0 <= d["bolus_hu"] <= 2500.0
    assert 0.3 < np.mean([d["bolus"] for d in draws if d["phase"] != "none"]) < 0.7
    # forcing a phase keeps every other draw: the same generator state afterwards
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    forced = draw_contrast(a, "arterial")
    draw_contrast(b)
    assert forced["phase"] == "arterial" and a.random() == b.random()
    with pytest.raises(ValueError, match="contrast phase"):
        draw_contrast(np.random.default_rng(0), "delayed")
