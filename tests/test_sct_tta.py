"""Flip TTA: members, mean and std, and the std map on exactly the MR's grid (oblique, non-RAS files)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from test_sct_inference import subject  # noqa: F401 - the oblique LPS / permuted subject fixture

from pipeline.sct.inference import SCTPredictor
from pipeline.sct.tta import STD_NAME, flip_members_hu, mean_and_std_hu, std_path_for
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
    members = flip_members_hu(lambda v: 0.5 * v + 0.1 * torch.arange(5.0).reshape(1, 5, 1, 1), mr)
    ramp = 0.1 * torch.arange(5.0).reshape(1, 5, 1, 1)
    np.testing.assert_allclose(members[0:1], unit_range_to_hu(0.5 * mr + ramp), rtol=1e-6)
    np.testing.assert_allclose(members[1:2], unit_range_to_hu(0.5 * mr + ramp.flip(1)), rtol=1e-6)
    mean, std = mean_and_std_hu(torch.tensor([[[[[1.0]]]], [[[[3.0]]]]]))
    assert mean.item() == 2.0 and std.item() == 1.0  # population std of {1, 3}


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
