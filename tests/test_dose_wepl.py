"""WEPL and range shift against geometry worked out by hand."""

import numpy as np
import pytest

from pipeline.dose.calibration import hu_to_rsp
from pipeline.dose.wepl import beam_direction, cumulative_wepl, range_shift, segment_wepl


def test_wepl_through_water_box_equals_its_length():
    rsp = np.zeros((30, 30, 30), np.float32)
    rsp[5:15, 5:25, 5:25] = 1.0  # 10 voxels of 2 mm along x: a 20 mm water box (voxel faces)
    assert segment_wepl(rsp, spacing_mm=(2, 2, 2), start_mm=(0, 30, 30), end_mm=(58, 30, 30)) == pytest.approx(20.0, abs=0.05)
    # oblique ray in the x-y plane through the 20 mm (x) slab: path length 20 / cos(30 deg)
    d = np.array([np.cos(np.pi / 6), np.sin(np.pi / 6), 0.0])
    start = np.array([20.0, 30.0, 30.0]) - 15 * d
    wepl = segment_wepl(rsp, spacing_mm=(2, 2, 2), start_mm=start, end_mm=start + 30 * d)
    assert wepl == pytest.approx(20.0 / np.cos(np.pi / 6), rel=0.02)


def test_cumulative_wepl_of_uniform_medium_is_linear():
    w = cumulative_wepl(np.full((2, 11), 1.2), step_mm=0.5)
    np.testing.assert_allclose(w[0], 1.2 * 0.5 * np.arange(11))


def test_beam_directions_follow_iec_in_lps():
    np.testing.assert_allclose(beam_direction(0.0), [0, 1, 0], atol=1e-12)  # from anterior, towards +P
    np.testing.assert_allclose(beam_direction(90.0), [-1, 0, 0], atol=1e-12)  # from the left, towards right
    with pytest.raises(NotImplementedError):
        beam_direction(0.0, couch_deg=10.0)


def _box_phantom():
    hu = np.full((40, 40, 30), -1000.0, np.float32)
    hu[5:35, 5:35, 5:25] = 0.0
    target = np.zeros(hu.shape, bool)
    target[10:15, 15:25, 10:20] = True
    return hu, target


def test_plus_50_hu_gives_range_shift_from_curve_slope():
    hu, target = _box_phantom()
    sct = np.where(hu > -500, hu + 50.0, hu)
    out = range_shift(hu_to_rsp(hu), hu_to_rsp(sct), target, spacing_mm=(3, 3, 3), direction=beam_direction(90.0))
    # beam travels -x: enters the water at x = 34.5 * 3 mm, target's distal face at x = 9.5 * 3 mm
    path_mm = (34.5 - 9.5) * 3.0
    drsp = 50.0 * (1.095 - 1.0) / 100.0  # slope of the documented table between 0 and 100 HU
    assert out["range_shift_mm"].size > 0
    np.testing.assert_allclose(out["wepl_diff_mm"], path_mm * drsp, atol=0.1)
    np.testing.assert_allclose(out["range_shift_mm"], path_mm / (1 + drsp) - path_mm, atol=0.15)
    assert np.all(out["range_shift_mm"] < -3.0)  # denser sCT: protons stop short


def test_identical_volumes_have_no_shift_and_less_dense_is_positive():
    hu, target = _box_phantom()
    rsp = hu_to_rsp(hu)
    same = range_shift(rsp, rsp, target, spacing_mm=(3, 3, 3), direction=beam_direction(270.0))
    assert np.abs(same["range_shift_mm"]).max() < 1e-9
    lighter = range_shift(rsp, hu_to_rsp(np.where(hu > -500, -45.0, hu)), target, spacing_mm=(3, 3, 3),
                          direction=beam_direction(0.0))
    assert np.all(lighter["range_shift_mm"] > 0)
