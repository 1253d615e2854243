"""The one header reader: NIfTI and ITK geometry as RAS affines, unreadable/truncated files, grid checks."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.errors import InputError
from pipeline.io.geometry import check_same_grid, read_geometry
from volume_fixtures import SHAPE, oblique_affine, save_nifti


def test_nifti_geometry_is_read_from_header(tmp_path):
    affine = oblique_affine()
    geometry = read_geometry(save_nifti(tmp_path / "mr.nii.gz", affine=affine))
    assert geometry.shape == SHAPE and geometry.ndim == 3
    np.testing.assert_allclose(geometry.affine, affine, atol=1e-5)
    np.testing.assert_allclose(geometry.spacing, (1.0, 1.5, 2.0), atol=1e-5)
    assert geometry.orientation == "LAS"
    assert geometry.has_orientation and geometry.dtype == "float32"


def test_mha_affine_is_converted_from_lps_to_the_nifti_ras_affine(tmp_path):
    nii = save_nifti(tmp_path / "mr.nii.gz")
    # SimpleITK's own NIfTI reader does the RAS -> LPS conversion independently of our code
    sitk.WriteImage(sitk.ReadImage(str(nii)), str(tmp_path / "mr.mha"))
    from_nifti, from_mha = read_geometry(nii), read_geometry(tmp_path / "mr.mha")
    assert from_mha.shape == from_nifti.shape == SHAPE
    np.testing.assert_allclose(from_mha.affine, from_nifti.affine, atol=1e-4)
    np.testing.assert_allclose(from_mha.spacing, from_nifti.spacing, atol=1e-5)
    check_same_grid(from_nifti, from_mha, subject_id="1BA001")  # does not raise


def test_mha_lps_origin_and_direction_give_expected_ras_affine(tmp_path):
    image = sitk.GetImageFromArray(np.zeros(SHAPE[::-1], np.int16))  # sitk arrays are (Z, Y, X)
    image.SetSpacing((0.5, 0.7, 2.0))
    image.SetOrigin((10.0, 20.0, 30.0))  # LPS mm
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))  # identity in LPS: +x is Left, +y is Posterior
    sitk.WriteImage(image, str(tmp_path / "ct.mha"))
    geometry = read_geometry(tmp_path / "ct.mha")
    expected = np.array([[-0.5, 0, 0, -10.0], [0, -0.7, 0, -20.0], [0, 0, 2.0, 30.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(geometry.affine, expected, atol=1e-6)
    assert geometry.shape == SHAPE and geometry.orientation == "LPS" and geometry.dtype == "16-bit signed integer"


def test_missing_file_names_subject_and_file(tmp_path):
    with pytest.raises(InputError, match=r"^1BA001: ct\.nii\.gz missing"):
        read_geometry(tmp_path / "ct.nii.gz", subject_id="1BA001")


@pytest.mark.parametrize("name", ["mr.nii.gz", "mr.mha", "mr.nii"])
def test_garbage_file_is_unreadable(tmp_path, name):
    (tmp_path / name).write_bytes(np.random.default_rng(1).bytes(600))
    with pytest.raises(InputError, match=rf"^1BA001: {name.replace('.', '[.]')} unreadable: "):
        read_geometry(tmp_path / name, subject_id="1BA001")


@pytest.mark.parametrize("name", ["mr.nii.gz", "mr.nii"])
def test_truncated_nifti_is_found_from_the_header_check(tmp_path, name):
    # the header survives truncation, so nib.load alone would accept these files
    full = save_nifti(tmp_path / f"full_{name}", shape=(16, 16, 12)).read_bytes()
    (tmp_path / name).write_bytes(full[: int(len(full) * 0.8)])
    assert nib.load(tmp_path / name).shape == (16, 16, 12)
    with pytest.raises(InputError, match=r"unreadable: .*truncated"):
        read_geometry(tmp_path / name, subject_id="1BA001")


def test_check_same_grid_reports_shape_and_affine_differences(tmp_path):
    mr = read_geometry(save_nifti(tmp_path / "mr.nii.gz"))
    ct_shape = read_geometry(save_nifti(tmp_path / "ct.nii.gz", shape=(8, 8, 7)))
    with pytest.raises(InputError, match=r"^1BA001: mr \(mr\.nii\.gz\) and ct \(ct\.nii\.gz\) .*shape \(8, 8, 6\) vs \(8, 8, 7\)"):
        check_same_grid(mr, ct_shape, subject_id="1BA001")

    shifted = oblique_affine(origin=(-10.0, 20.0, 7.0))
    ct_shifted = read_geometry(save_nifti(tmp_path / "ct2.nii.gz", affine=shifted))
    with pytest.raises(InputError, match=r"origin .* \(2 mm apart\)"):
        check_same_grid(mr, ct_shifted, subject_id="1BA001")

    rotated = read_geometry(save_nifti(tmp_path / "ct3.nii.gz", affine=oblique_affine(angle_deg=16.0)))
    with pytest.raises(InputError, match=r"voxel axes differ"):
        check_same_grid(mr, rotated, subject_id="1BA001", names=("mr", "mask"))

    flipped = oblique_affine()
    flipped[:3, 1] *= -1
    with pytest.raises(InputError, match=r"orientation LAS vs LPS"):
        check_same_grid(mr, read_geometry(save_nifti(tmp_path / "ct4.nii.gz", affine=flipped)), subject_id="x")

    # sub-tolerance float noise is accepted
    noisy = oblique_affine()
    noisy[:3, 3] += 1e-5
    check_same_grid(mr, read_geometry(save_nifti(tmp_path / "ct5.nii.gz", affine=noisy)), subject_id="1BA001")


def test_orientation_must_be_known_and_unambiguous(tmp_path):
    from pipeline.io.geometry import check_orientation

    check_orientation(read_geometry(save_nifti(tmp_path / "ok.nii.gz")), subject_id="1BA001")
    none = nib.Nifti1Image(np.ones(SHAPE, np.float32), oblique_affine())
    none.set_qform(None, code=0)
    none.set_sform(None, code=0)
    nib.save(none, tmp_path / "none.nii.gz")
    with pytest.raises(InputError, match=r"1BA001: none.nii.gz has neither qform nor sform"):
        check_orientation(read_geometry(tmp_path / "none.nii.gz"), subject_id="1BA001")
    both = nib.Nifti1Image(np.ones(SHAPE, np.float32), oblique_affine())
    rotated = oblique_affine(angle_deg=16.0)
    both.set_qform(oblique_affine(), code=1)
    both.set_sform(rotated, code=1)
    nib.save(both, tmp_path / "both.nii.gz")
    geometry = read_geometry(tmp_path / "both.nii.gz")
    # independent: where the two affines put the far corner
    corner = np.array([s - 1 for s in SHAPE] + [1.0])
    expected = np.linalg.norm((oblique_affine() @ corner - rotated @ corner)[:3])
    assert geometry.form_disagreement_mm == pytest.approx(expected, rel=1e-3)
    with pytest.raises(InputError, match="qform and sform disagree"):
        check_orientation(geometry)
