"""transforms/lung.py: the lung mask behind the DRRs' lung path and the lung-field bone leak."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.lung import lung_mask


@pytest.mark.parametrize("superior_axis", [2, 0])
def test_lung_mask_keeps_the_lungs_not_the_airway_the_outside_air_or_a_table_pad(superior_axis):
    # (x, y, z) with z superior: a soft-tissue trunk holding two lungs joined by a trachea that leaves the top
    hu = np.full((40, 30, 24), -1000.0, np.float32)
    hu[5:35, 5:25, :] = 40.0  # the trunk runs through the whole volume along z
    lungs = np.zeros(hu.shape, bool)
    lungs[8:18, 8:22, 4:18] = lungs[22:32, 8:22, 4:18] = True
    hu[lungs] = -820.0
    hu[19:21, 14:16, 10:] = -1000.0  # trachea: air from the carina out of the top of the volume
    hu[17:23, 14:16, 10:12] = -1000.0  # main bronchi into both lungs
    hu[5:35, 26:29, :] = -870.0  # a foam table pad below the patient, lung-like HU
    expected = lungs & (hu > -950)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    if superior_axis == 0:  # stored with the superior axis first: the slice-wise fill must follow the affine
        hu, expected = np.moveaxis(hu, 2, 0), np.moveaxis(expected, 2, 0)
        affine = np.array([[0, 2.0, 0, 0], [0, 0, 2.0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    got = lung_mask(hu, affine)
    assert got.dtype == bool and got.shape == hu.shape
    np.testing.assert_array_equal(got, expected)
