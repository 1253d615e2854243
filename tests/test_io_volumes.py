"""pipeline.io.volumes: exact HU storage on the reference grid, header copy, atomic and non-clobbering writes."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from pipeline.io.geometry import read_geometry
from pipeline.io.volumes import read_volume, write_like_reference

SHAPE = (7, 9, 5)


def oblique_lps_affine() -> np.ndarray:
    """RAS affine of an oblique, anisotropic grid whose voxel axes run roughly along L, P, S."""
    rotation = Rotation.from_euler("xyz", [8.0, -5.0, 12.0], degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rotation @ np.diag([0.8, 1.3, 2.5])
    affine[:3, 3] = [30.0, -20.0, 15.0]
    return affine


@pytest.fixture()
def nifti_reference(tmp_path: Path) -> Path:
    """MR-like reference: oblique grid, distinct qform/sform codes, scaled int16 data."""
    affine = oblique_lps_affine()
    stored = np.random.default_rng(0).integers(0, 500, SHAPE).astype(np.int16)
    image = nib.Nifti1Image(stored, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_slope_inter(2.5, 7.0)  # scaled integer MR (as some scanners export): must not leak into HU
    path = tmp_path / "mr.nii.gz"
    nib.save(image, path)
    return path


def hu_with_known_values() -> tuple[np.ndarray, np.ndarray]:
    hu = np.full(SHAPE, 40.0, dtype=np.float32)
    values = np.array([-1024.0, -1000.0, 0.0, 1500.0, 3000.0, 12.6, -12.6, 2.5])
    expected = np.array([-1024, -1000, 0, 1500, 3000, 13, -13, 2])  # np.rint: halves to even
    hu.reshape(-1)[: values.size] = values
    want = np.full(SHAPE, 40, dtype=np.int16)
    want.reshape(-1)[: values.size] = expected
    return hu, want


def test_nifti_hu_stored_exactly_with_reference_header(nifti_reference: Path, tmp_path: Path) -> None:
    hu, want = hu_with_known_values()
    out = write_like_reference(hu, reference_path=nifti_reference, out_path=tmp_path / "sct.nii.gz")
    written, ref = nib.load(out), nib.load(nifti_reference)
    assert written.get_data_dtype() == np.int16
    raw = np.asarray(written.dataobj.get_unscaled())
    np.testing.assert_array_equal(raw, want)  # stored integers are the HU themselves
    # nibabel hides the stored scaling on load (header shows NaN); read the header bytes on disk.
    with gzip.open(out, "rb") as stream:
        on_disk = nib.Nifti1Header.from_fileobj(stream)
    assert float(on_disk["scl_slope"]) == 1.0 and float(on_disk["scl_inter"]) == 0.0
    assert written.dataobj.slope == 1.0 and written.dataobj.inter == 0.0
    np.testing.assert_array_equal(np.asarray(written.dataobj), want)
    for field in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
                  "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "pixdim", "xyzt_units"):
        np.testing.assert_array_equal(written.header[field], ref.header[field], err_msg=field)
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 2
    np.testing.assert_array_equal(written.get_qform(), ref.get_qform())
    np.testing.assert_array_equal(written.get_sform(), ref.get_sform())
    np.testing.assert_array_equal(written.affine, ref.affine)


def test_read_volume_and_geometry(nifti_reference: Path, tmp_path: Path) -> None:
    hu, want = hu_with_known_values()
    out = write_like_reference(hu, reference_path=nifti_reference, out_path=tmp_path / "sct.nii.gz")
    data, affine = read_volume(out)
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, want)
    geometry = read_geometry(out)
    shape, geometry_affine = geometry.spatial_shape, geometry.affine
    assert shape == SHAPE
    np.testing.assert_allclose(affine, nib.load(nifti_reference).affine)
    np.testing.assert_allclose(geometry_affine, affine)


def test_shape_mismatch_is_rejected(nifti_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "sct.nii.gz"
    with pytest.raises(ValueError, match=r"does not match the reference grid \(7, 9, 5\)"):
        write_like_reference(np.zeros((9, 7, 5)), reference_path=nifti_reference, out_path=out)
    assert not out.exists()


def test_nan_is_rejected_for_integer_output(nifti_reference: Path, tmp_path: Path) -> None:
    hu = np.zeros(SHAPE)
    hu[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_like_reference(hu, reference_path=nifti_reference, out_path=tmp_path / "sct.nii.gz")


def test_values_beyond_int16_are_clipped(nifti_reference: Path, tmp_path: Path) -> None:
    hu = np.zeros(SHAPE)
    hu[0, 0, 0], hu[0, 0, 1] = 40000.0, -40000.0
    out = write_like_reference(hu, reference_path=nifti_reference, out_path=tmp_path / "sct.nii.gz")
    data = np.asarray(nib.load(out).dataobj)
    assert data[0, 0, 0] == 32767 and data[0, 0, 1] == -32768


def test_refuses_to_overwrite_unless_asked(nifti_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "sct.nii.gz"
    write_like_reference(np.zeros(SHAPE), reference_path=nifti_reference, out_path=out)
    before = out.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True / --overwrite"):
        write_like_reference(np.ones(SHAPE), reference_path=nifti_reference, out_path=out)
    assert out.read_bytes() == before
    write_like_reference(np.full(SHAPE, 7.0), reference_path=nifti_reference, out_path=out, overwrite=True)
    assert np.all(np.asarray(nib.load(out).dataobj) == 7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mr.nii.gz", "sct.nii.gz"]  # no temp files left


def test_mha_reference_round_trip_keeps_geometry(tmp_path: Path) -> None:
    reference = sitk.GetImageFromArray(np.zeros(SHAPE[::-1], dtype=np.float32))
    reference.SetOrigin((-12.5, 40.25, 3.0))
    reference.SetSpacing((0.8, 1.3, 2.5))
    direction = Rotation.from_euler("zyx", [20.0, 5.0, -7.0], degrees=True).as_matrix()
    reference.SetDirection(direction.ravel().tolist())
    ref_path = tmp_path / "mr.mha"
    sitk.WriteImage(reference, str(ref_path))
    hu, want = hu_with_known_values()

    out = write_like_reference(hu, reference_path=ref_path, out_path=tmp_path / "sct.mha")
    written = sitk.ReadImage(str(out))
    assert written.GetPixelID() == sitk.sitkInt16
    np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(written.GetSpacing(), reference.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-9)
    data, affine = read_volume(out)
    np.testing.assert_array_equal(data, want)  # (X, Y, Z) file order, not SimpleITK's (Z, Y, X)
    expected_lps = np.asarray(reference.TransformContinuousIndexToPhysicalPoint((1.0, 2.0, 3.0)))
    np.testing.assert_allclose((affine @ [1, 2, 3, 1])[:3], expected_lps * [-1, -1, 1], atol=1e-9)


def test_nifti_reference_written_as_mha_has_same_world_geometry(nifti_reference: Path, tmp_path: Path) -> None:
    hu, want = hu_with_known_values()
    out = write_like_reference(hu, reference_path=nifti_reference, out_path=tmp_path / "sct.mha")
    data, affine = read_volume(out)
    np.testing.assert_array_equal(data, want)
    np.testing.assert_allclose(affine, nib.load(nifti_reference).affine, atol=1e-4)


def test_multi_file_output_formats_are_rejected(nifti_reference: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="single-file|must be one of"):
        write_like_reference(np.zeros(SHAPE), reference_path=nifti_reference, out_path=tmp_path / "sct.mhd")


def test_reference_without_orientation_is_refused(tmp_path: Path) -> None:
    from pipeline.errors import InputError

    reference = nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4))
    reference.set_qform(None, code=0)
    reference.set_sform(None, code=0)
    nib.save(reference, tmp_path / "mr.nii.gz")
    with pytest.raises(InputError, match="neither qform nor sform"):
        write_like_reference(np.zeros(SHAPE), reference_path=tmp_path / "mr.nii.gz", out_path=tmp_path / "sct.nii.gz")
    assert not (tmp_path / "sct.nii.gz").exists()
