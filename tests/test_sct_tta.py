"""Flip TTA: members, mean and std, and the std map on exactly the MR's grid (oblique, non-RAS files)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from test_sct_inference import subject  # noqa: F401 - the oblique LPS / permuted subject fixture

from pipeline.sct.inference import SCTPredictor
from pipeline.sct.tta import STD_NAME, mean_and_std_hu, member_count, members_hu, std_path_for
from transforms.intensity import HU_AIR, normalize_mr, unit_range_to_hu


class ShiftX(torch.nn.Module):
    """Not mirror-symmetric on purpose: the centre channel moved one voxel along X (the first spatial axis),
    ``out[x] = in[x + 1]``; so the mirrored member is ``in[x - 1]`` and the members disagree by a known amount."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[1]
        centre = x[:, k // 2 : k // 2 + 1]
        return torch.cat([centre[:, :, 1:], torch.full_like(centre[:, :, :1], -1.0)], dim=2)


def test_std_path_for():
    assert std_path_for(Path("p/1BP001/sct.nii.gz")) == Path("p/1BP001") / STD_NAME
    assert std_path_for("p/1BP001_sct.nii.gz") == Path("p/1BP001_sct_std.nii.gz")


def test_members_mean_and_std_by_hand():
    mr = torch.linspace(-1, 1, 5).reshape(1, 5, 1, 1)
    members = members_hu(lambda v: 0.5 * v + 0.1 * torch.arange(5.0).reshape(1, 5, 1, 1), mr, flip=True)
    ramp = 0.1 * torch.arange(5.0).reshape(1, 5, 1, 1)
    np.testing.assert_allclose(members[0:1], unit_range_to_hu(0.5 * mr + ramp), rtol=1e-6)
    np.testing.assert_allclose(members[1:2], unit_range_to_hu(0.5 * mr + ramp.flip(1)), rtol=1e-6)
    mean, std = mean_and_std_hu(torch.tensor([[[[[1.0]]]], [[[[3.0]]]]]))
    assert mean.item() == 2.0 and std.item() == 1.0  # population std of {1, 3}


def test_plane_members_come_back_on_the_network_grid():
    """A predictor that moves every voxel one step along its input's last axis: the axial member moves along
    Z, the coronal along Y, the sagittal along X, each mapped back to (X, Y, Z)."""
    mr = torch.rand(1, 5, 6, 7) * 2 - 1

    def along_last(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([v[..., 1:], v[..., -1:]], dim=-1)

    members = members_hu(along_last, mr, planes=("axial", "coronal", "sagittal"))
    assert members.shape == (3, 5, 6, 7) and member_count(planes=("axial", "coronal", "sagittal"), flip=False) == 3
    m = mr[0].numpy()
    for member, axis in zip(members, (2, 1, 0)):
        index = [slice(None)] * 3
        index[axis] = np.r_[1 : m.shape[axis], m.shape[axis] - 1]
        np.testing.assert_allclose(member.numpy(), unit_range_to_hu(m[tuple(index)]), rtol=1e-6)
    assert members_hu(along_last, mr, planes=("coronal",), flip=True).shape[0] == 2


def shifted(a: np.ndarray, axis: int, step: int) -> np.ndarray:
    """``a`` moved by ``step`` voxels along ``axis``, -1 (MR air) coming in at the edge."""
    out = np.full_like(a, -1.0)
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    src[axis], dst[axis] = (slice(step, None), slice(None, -step)) if step > 0 else (slice(None, step), slice(-step, None))
    out[tuple(dst)] = a[tuple(src)]
    return out


@pytest.mark.parametrize("mode", ["2.5d", "3d"])
@pytest.mark.parametrize(("grid", "left_right_file_axis"), [("lps", 0), ("permuted", 2)])
def test_std_map_beside_the_sct_on_the_mr_grid(subject, tmp_path, mode, grid, left_right_file_axis):  # noqa: F811
    files = subject[grid]
    # one window covers a whole slice / the volume, so the shift sees true neighbours everywhere inside the body
    predictor = SCTPredictor(ShiftX(), mode=mode, patch_size=32, slab_size=5 if mode == "2.5d" else 1,
                             device="cpu", progress=False, tta=True)
    out = predictor.predict_file(files["mr"], tmp_path / "sct.nii.gz", mask_path=files["mask"])
    std_file = tmp_path / STD_NAME
    mr_image, std_image = nib.load(files["mr"]), nib.load(std_file)
    assert std_image.shape == mr_image.shape
    np.testing.assert_array_equal(std_image.affine, mr_image.affine)
    np.testing.assert_array_equal(std_image.get_qform(), mr_image.get_qform())
    np.testing.assert_array_equal(std_image.get_sform(), mr_image.get_sform())
    assert (int(std_image.header["qform_code"]), int(std_image.header["sform_code"])) == (1, 2)

    # independent reference on the file grid: RAS x (left-right) is file axis 0 (lps) or 2 (permuted);
    # members are the normalised MR shifted by +1 and -1 voxel along it (direction does not matter)
    inside = subject["mask"] > 0
    unit = normalize_mr(subject["mr"], subject["mask"])
    a = unit_range_to_hu(shifted(unit, left_right_file_axis, 1))
    b = unit_range_to_hu(shifted(unit, left_right_file_axis, -1))
    std = np.asarray(std_image.dataobj)
    np.testing.assert_allclose(std[inside], (np.abs(a - b) / 2)[inside], atol=0.05)
    assert np.all(std[~inside] == 0) and std[inside].max() > 50  # the test must see a real spread
    sct = np.asarray(nib.load(out).dataobj)
    np.testing.assert_allclose(sct[inside], np.rint((a + b) / 2)[inside], atol=1)
    assert np.all(sct[~inside] == HU_AIR)


def test_tta_refuses_an_existing_std_map(subject, tmp_path):  # noqa: F811
    (tmp_path / STD_NAME).write_bytes(b"")
    predictor = SCTPredictor(ShiftX(), mode="2.5d", patch_size=32, device="cpu", progress=False, tta=True)
    with pytest.raises(FileExistsError, match="sct_std"):
        predictor.predict_file(subject["lps"]["mr"], tmp_path / "sct.nii.gz", mask_path=subject["lps"]["mask"])


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` reoriented to the closest RAS axes with nibabel (independent of the code under test), and the
    orientation to undo it."""
    ornt = nib.orientations.io_orientation(affine)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    return nib.orientations.apply_orientation(array, ornt), back


@pytest.mark.parametrize("grid", ["lps", "permuted"])
def test_multi_plane_sct_and_std_on_the_mr_grid(subject, tmp_path, grid):  # noqa: F811
    """Three planes, ShiftX moves each member along its first in-plane axis: RAS x for axial and coronal
    slabs, RAS y for sagittal ones. Reference built on a nibabel-reoriented array."""
    files = subject[grid]
    predictor = SCTPredictor(ShiftX(), mode="2.5d", patch_size=32, slab_size=5, device="cpu", progress=False,
                             planes="all")
    out = predictor.predict_file(files["mr"], tmp_path / "sct.nii.gz", mask_path=files["mask"])
    affine = nib.load(files["mr"]).affine
    for path in (out, tmp_path / STD_NAME):
        image = nib.load(path)
        assert image.shape == subject["mr"].shape
        np.testing.assert_array_equal(image.affine, affine)

    unit_ras, back = to_ras(normalize_mr(subject["mr"], subject["mask"]), affine)
    a = unit_range_to_hu(shifted(unit_ras, 0, 1))  # axial and coronal members
    b = unit_range_to_hu(shifted(unit_ras, 1, 1))  # sagittal member
    mean = nib.orientations.apply_orientation((2 * a + b) / 3, back)
    std = nib.orientations.apply_orientation(np.abs(a - b) * np.sqrt(2) / 3, back)
    inside = subject["mask"] > 0
    np.testing.assert_allclose(np.asarray(nib.load(out).dataobj)[inside], np.rint(mean)[inside], atol=1)
    std_written = np.asarray(nib.load(tmp_path / STD_NAME).dataobj)
    np.testing.assert_allclose(std_written[inside], std[inside], atol=0.05)
    assert std_written[inside].max() > 50 and np.all(std_written[~inside] == 0)
