"""Multi-plane 2.5D: axis permutations and their inverse (the training crops along each plane are tested with
the crop sampler, tests/test_data_crop_sampler.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transforms.plane import PLANES, check_planes, from_plane, to_plane


def volume(shape=(2, 3, 4)) -> torch.Tensor:
    return torch.arange(float(np.prod(shape))).reshape(1, *shape)


def test_each_plane_puts_its_normal_last_voxel_for_voxel():
    v = volume()  # X = 2, Y = 3, Z = 4 voxels
    assert tuple(to_plane(v, "axial").shape) == (1, 2, 3, 4)
    coronal, sagittal = to_plane(v, "coronal"), to_plane(v, "sagittal")
    assert tuple(coronal.shape) == (1, 2, 4, 3) and tuple(sagittal.shape) == (1, 3, 4, 2)
    for x, y, z in np.ndindex(2, 3, 4):  # written out, independent of the permutation table
        assert coronal[0, x, z, y] == v[0, x, y, z]
        assert sagittal[0, y, z, x] == v[0, x, y, z]


@pytest.mark.parametrize("plane", PLANES)
def test_from_plane_inverts_to_plane(plane):
    v = volume((3, 5, 7))
    assert torch.equal(from_plane(to_plane(v, plane), plane), v)


def test_check_planes():
    assert check_planes("all") == ("axial", "coronal", "sagittal")
    assert check_planes("coronal") == ("coronal",)
    for bad in (["axial", "axial"], ["oblique"], []):
        with pytest.raises(ValueError, match="planes"):
            check_planes(bad)
