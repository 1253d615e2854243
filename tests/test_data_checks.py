"""Tests for pipeline.data.checks: header geometry (NIfTI and ITK), grid checks, array checks, subjects."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pipeline.errors import InputError
from pipeline.data.checks import check_mask_array, check_volume_array, validate_subject
from pipeline.io.geometry import check_same_grid, read_geometry

SHAPE = (8, 8, 6)


def oblique_affine(spacing=(1.0, 1.5, 2.0), origin=(-10.0, 20.0, 5.0), angle_deg=15.0) -> np.ndarray:
    """Voxel -> RAS mm with a rotation about z and a flipped x axis (an LAS-like, non-trivial grid)."""
    a = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ np.diag([-1, 1, 1])
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


def save_nifti(path, data=None, affine=None, *, shape=SHAPE, dtype=np.float32):
    data = np.random.default_rng(0).normal(100, 10, shape).astype(dtype) if data is None else data
    img = nib.Nifti1Image(data, oblique_affine() if affine is None else affine)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, path)
    return path


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


def test_check_volume_array_dimensionality_nan_and_constant():
    good = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    check_volume_array(good, subject_id="1BA001", role="mr")
    check_volume_array(torch.from_numpy(good), subject_id="1BA001", role="mr")

    with pytest.raises(InputError, match=r"^1BA001: mr \(mr\.nii\.gz\) is 4-D \(8, 8, 6, 2\); expected a 3-D volume"):
        check_volume_array(np.zeros((*SHAPE, 2)), subject_id="1BA001", role="mr", source="/data/1BA001/mr.nii.gz")
    with pytest.raises(InputError, match=r"4-D \(1, 8, 8, 6\).*singleton"):  # a channel axis is not silently dropped
        check_volume_array(good[None], subject_id="1BA001", role="mr")

    bad = good.copy()
    bad[0, 0, :3] = np.nan
    bad[1, 1, 1] = np.inf
    with pytest.raises(InputError, match=r"^1BA001: ct contains non-finite values: 3 NaN and 1 Inf of 384 voxels"):
        check_volume_array(bad, subject_id="1BA001", role="ct")

    with pytest.raises(InputError, match=r"constant \(every voxel = -1000\)"):
        check_volume_array(np.full(SHAPE, -1000, np.int16), subject_id="1BA001", role="ct")


def test_check_mask_array_rejects_empty_mask():
    mask = np.zeros(SHAPE, np.uint8)
    with pytest.raises(InputError, match=r"^1BA001: mask is empty: no voxel > 0"):
        check_mask_array(mask, subject_id="1BA001")
    mask[2, 3, 4] = 1
    check_mask_array(mask, subject_id="1BA001")
    with pytest.raises(InputError, match=r"3-D"):
        check_mask_array(mask[..., 0], subject_id="1BA001")


def test_validate_subject_collects_all_problems_without_raising(tmp_path):
    save_nifti(tmp_path / "mr.nii.gz")
    save_nifti(tmp_path / "mask.nii.gz", np.zeros(SHAPE, np.uint8))  # empty mask: seen only with read_data
    (tmp_path / "ct.nii.gz").write_bytes(b"not a gzip file" * 40)
    subject = {"subject_id": "1BA001", "mr": tmp_path / "mr.nii.gz", "ct": tmp_path / "ct.nii.gz",
               "mask": tmp_path / "mask.nii.gz"}
    header_only = validate_subject(subject)
    assert len(header_only) == 1 and header_only[0].startswith("1BA001: ct.nii.gz unreadable")
    with_data = validate_subject(subject, read_data=True)
    assert any("mask (mask.nii.gz) is empty" in p for p in with_data)

    save_nifti(tmp_path / "mr4d.nii.gz", shape=(*SHAPE, 2))
    problems = validate_subject({"subject_id": "1BA002", "mr": tmp_path / "mr4d.nii.gz", "ct": None, "mask": float("nan")})
    assert problems == ["1BA002: mr4d.nii.gz is 4-D (8, 8, 6, 2); expected a 3-D volume"]

    assert validate_subject({"subject_id": "1BA003", "mr": None}) == ["1BA003: no mr file given"]
    assert validate_subject({"subject_id": "1BA004", "mr": tmp_path / "mr.nii.gz"}, read_data=True) == []


def test_validate_subject_flags_grid_mismatch_and_unknown_orientation(tmp_path):
    save_nifti(tmp_path / "mr.nii.gz")
    save_nifti(tmp_path / "ct.nii.gz", affine=oblique_affine(spacing=(1.0, 1.5, 2.5)))
    img = nib.Nifti1Image(np.ones(SHAPE, np.uint8), None)
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, tmp_path / "mask.nii.gz")
    problems = validate_subject({"subject_id": "1BA001", "mr": tmp_path / "mr.nii.gz",
                                 "ct": tmp_path / "ct.nii.gz", "mask": tmp_path / "mask.nii.gz"})
    text = "\n".join(problems)
    assert "1BA001: mr (mr.nii.gz) and ct (ct.nii.gz) are not on the same grid: spacing (1, 1.5, 2) vs (1, 1.5, 2.5) mm" in text
    assert "1BA001: mask.nii.gz has neither qform nor sform" in text
    assert "mr (mr.nii.gz) and mask (mask.nii.gz) are not on the same grid" in text
