"""Input checks: array sanity (dimensions, NaN, constant, empty mask) and whole-subject problem lists."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.data.checks import check_mask_array, check_volume_array, validate_subject
from pipeline.errors import InputError
from volume_fixtures import SHAPE, oblique_affine, save_nifti


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


def test_ct_without_the_hu_offset_is_refused_naming_subject_and_file(tmp_path):
    from pipeline.data.checks import check_ct_hu

    hu = np.random.default_rng(1).uniform(-1024, 1500, SHAPE)
    check_ct_hu(hu, subject_id="1BA001")
    with pytest.raises(InputError, match=r"1BA001: ct \(ct.nii.gz\) values span \[\d.*not in HU"):
        check_ct_hu(hu + 1024, subject_id="1BA001", source=tmp_path / "ct.nii.gz")
    mr = save_nifti(tmp_path / "mr.nii.gz")
    ct = save_nifti(tmp_path / "ct.nii.gz", data=(hu + 1024).astype(np.int16))
    problems = validate_subject({"subject_id": "1BA001", "mr": mr, "ct": ct}, read_data=True)
    assert any("not in HU" in p and p.startswith("1BA001") for p in problems)


def test_qform_and_sform_that_disagree_are_reported(tmp_path):
    img = nib.Nifti1Image(np.ones(SHAPE, np.float32), oblique_affine())
    shifted = oblique_affine()
    shifted[0, 3] += 4.0
    img.set_qform(oblique_affine(), code=1)
    img.set_sform(shifted, code=1)
    nib.save(img, tmp_path / "mr.nii.gz")
    problems = validate_subject({"subject_id": "1BA001", "mr": tmp_path / "mr.nii.gz"})
    assert any("qform and sform disagree by 4 mm" in p for p in problems)
