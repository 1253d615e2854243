"""Dose figures: DVH curves and the CT dose | sCT dose | difference | gamma panel are drawn from the data
(pixels change with the dose), and existing files are never replaced silently."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.dose.figures import save_dose_slices, save_dvh


def _doses():
    i, j, k = np.mgrid[:20, :20, :10]
    reference = 2.0 * np.exp(-((i - 10) ** 2 + (j - 10) ** 2) / 30.0) * (k >= 0)
    return reference, reference * 1.05


def _pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=float)


def test_dvh_depends_on_the_doses_and_refuses_overwrite(tmp_path):
    reference, evaluated = _doses()
    target = np.zeros(reference.shape, bool)
    target[8:12, 8:12] = True
    a = save_dvh(reference=reference, evaluated=evaluated, structures={"target": target}, prescription_gy=2.0,
                 out_path=tmp_path / "a.png")
    b = save_dvh(reference=reference, evaluated=reference * 0.5, structures={"target": target}, prescription_gy=2.0,
                 out_path=tmp_path / "b.png")
    assert _pixels(a).std() > 0 and np.abs(_pixels(a) - _pixels(b)).sum() > 0
    with pytest.raises(FileExistsError):
        save_dvh(reference=reference, evaluated=evaluated, structures={"target": target}, prescription_gy=2.0,
                 out_path=a)


def test_slice_panel_has_four_panels_that_follow_the_data(tmp_path):
    reference, evaluated = _doses()
    gamma = np.abs(evaluated - reference)
    kwargs = dict(spacing_mm=(3.0, 3.0, 3.0), slice_index=5, prescription_gy=2.0)
    a = save_dose_slices(reference=reference, evaluated=evaluated, gamma=gamma, out_path=tmp_path / "a.png", **kwargs)
    b = save_dose_slices(reference=reference, evaluated=reference, gamma=gamma * 0, out_path=tmp_path / "b.png",
                         **kwargs)
    pixels = _pixels(a)
    assert pixels.shape[1] > 2.5 * pixels.shape[0]  # four panels side by side
    assert np.abs(pixels - _pixels(b)).sum() > 0
