"""Multi-plane 2.5D transforms: axis permutations, their inverse, the box, and the left-right flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transforms.crop import RandBodyCropd, mask_bounding_box
from transforms.plane import (
    PLANES,
    RandPlaned,
    check_planes,
    from_plane,
    plane_axis_of,
    to_plane,
)


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


def test_left_right_axis_after_each_plane():
    assert [plane_axis_of(0, p) for p in ("axial", "coronal", "sagittal")] == [0, 0, 2]


def test_check_planes():
    assert check_planes("all") == ("axial", "coronal", "sagittal")
    assert check_planes("coronal") == ("coronal",)
    for bad in (["axial", "axial"], ["oblique"], []):
        with pytest.raises(ValueError, match="planes"):
            check_planes(bad)


def test_rand_planed_permutes_volumes_and_box_together():
    mask = torch.zeros(1, 10, 12, 14, dtype=torch.uint8)
    mask[0, 2:5, 3:9, 1:13] = 1
    data = {"mr": mask.float(), "mask": mask, "mask_box": mask_bounding_box(mask)}
    seen = set()
    transform = RandPlaned(["mr", "mask"], planes="all")
    transform.set_random_state(0)
    for _ in range(30):
        out = transform(data)
        seen.add(out["plane"])
        np.testing.assert_array_equal(out["mask_box"], mask_bounding_box(out["mask"]))
        assert torch.equal(out["mr"], to_plane(mask.float(), out["plane"]))
    assert seen == set(PLANES)
    assert torch.equal(data["mask"], mask)  # the cached input is not modified


@pytest.mark.parametrize("plane", PLANES)
def test_the_crops_left_right_flip_mirrors_the_patient_in_every_plane(plane):
    v = volume((4, 5, 6))
    mask = torch.ones_like(v, dtype=torch.uint8)
    data = {"mr": to_plane(v, plane), "mask": to_plane(mask, plane), "plane": plane}
    data["mask_box"] = mask_bounding_box(data["mask"])
    whole = tuple(data["mr"].shape[1:])  # a crop of the whole volume, so only the flip changes it
    crop = RandBodyCropd(["mr"], label_key="mask", spatial_size=whole, flip_prob=1.0, flip_axis=0)
    out = crop(data)[0]["mr"]
    expected = to_plane(torch.flip(v, dims=[1]), plane)  # mirrored along RAS x (dim 1 of (C, X, Y, Z))
    assert torch.equal(out, expected)
