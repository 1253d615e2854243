"""pipeline.io.dicom_series: DICOM series -> voxels + RAS affine, series selection, refused series."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from pipeline.data.phantoms.head import make_phantom_subject
from pipeline.errors import InputError
from pipeline.io.dicom import write_mr_dicom_series
from pipeline.io.dicom_series import is_dicom_folder, list_series, read_series, read_series_volume, volume_file

# A sagittal, oblique, left-handed grid: voxel axes stored as (A, S, R)-ish, nothing like DICOM's order.
SAGITTAL = np.array([[0.0, 0.0, -1.3], [0.9, 0.0, 0.0], [0.0, 1.1, 0.0]])


@pytest.fixture(scope="module")
def phantom():
    subject = make_phantom_subject(seed=3, size="tiny")
    return np.rint(subject.mr).astype(np.int16), subject.affine


def write_series(folder: Path, values: np.ndarray, affine: np.ndarray, **ids) -> list[Path]:
    return write_mr_dicom_series(values, affine=affine, out_dir=folder, identifiers=ids or None)


def canonical(values: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: nibabel's closest-canonical (RAS) voxel order of the same image."""
    image = nib.as_closest_canonical(nib.Nifti1Image(values.astype(np.float32), affine))
    return np.asarray(image.dataobj), image.affine


@pytest.mark.parametrize("grid", ["phantom", "sagittal"])
def test_series_reads_back_the_volume_at_its_world_positions(phantom, grid: str, tmp_path: Path) -> None:
    values, affine = phantom
    if grid == "sagittal":
        affine = affine.copy()
        affine[:3, :3] = SAGITTAL @ np.diag([1.0, 1.0, 1.0])
    write_series(tmp_path / "mr", values, affine)
    series = read_series(tmp_path / "mr")
    volume = read_series_volume(series)
    assert volume.shape == series.shape and len(series.files) == series.shape[2]
    expected_values, expected_affine = canonical(values, affine)
    got_values, got_affine = canonical(volume, series.affine)
    np.testing.assert_allclose(got_affine, expected_affine, atol=1e-6)
    np.testing.assert_array_equal(got_values, expected_values)
    if grid == "phantom":  # LPS-like storage: DICOM order is the file order, no rearrangement at all
        np.testing.assert_allclose(series.affine, affine, atol=1e-6)
        np.testing.assert_array_equal(volume, values)


def test_volume_file_converts_a_folder_once_and_cleans_up(phantom, tmp_path: Path) -> None:
    values, affine = phantom
    write_series(tmp_path / "1BA001", values, affine)
    assert is_dicom_folder(tmp_path / "1BA001") and not is_dicom_folder(tmp_path)
    with volume_file(tmp_path / "1BA001", subject_id="1BA001") as path:
        image = nib.load(path)
        assert path.name == "1BA001.nii.gz"
        np.testing.assert_allclose(image.affine, affine, atol=1e-4)  # NIfTI keeps float32 affines
        assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 1
        np.testing.assert_array_equal(np.asarray(image.dataobj), values)
    assert not path.exists() and not path.parent.exists()
    with volume_file(tmp_path / "x.nii.gz") as same:  # a file is used as it is
        assert same == tmp_path / "x.nii.gz"


def test_series_selection(phantom, tmp_path: Path) -> None:
    values, affine = phantom
    small, small_affine = values[::4, ::4, ::4], affine @ np.diag([4.0, 4.0, 4.0, 1.0])
    write_series(tmp_path / "a", small, small_affine)
    write_series(tmp_path / "b", small + 1, small_affine)
    for path in (tmp_path / "b").iterdir():
        path.rename(tmp_path / "a" / f"b_{path.name}")
    (tmp_path / "a" / "readme.txt").write_text("ignored")
    uids = [s.uid for s in list_series(tmp_path / "a")]
    assert len(uids) == 2
    with pytest.raises(InputError, match=r"^1BA009: a: 2 MR series .*name one SeriesInstanceUID") as info:
        read_series(tmp_path / "a", subject_id="1BA009")
    assert all(uid in str(info.value) for uid in uids)
    chosen = pydicom.dcmread(tmp_path / "a" / "b_MR_0001.dcm").SeriesInstanceUID
    np.testing.assert_array_equal(read_series_volume(read_series(tmp_path / "a", series_uid=chosen)), small + 1)
    with pytest.raises(InputError, match="no series 1.2.3"):
        read_series(tmp_path / "a", series_uid="1.2.3")
    with pytest.raises(InputError, match="no MR series"):
        read_series(tmp_path, modality="MR")  # the parent folder holds no DICOM file


def _edit(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def _shift(ds, offset) -> None:
    ds.ImagePositionPatient = [f"{float(v) + d:.6f}" for v, d in zip(ds.ImagePositionPatient, offset)]


BROKEN = {
    # name: (change applied to the slice files, expected message, file that must be named)
    "missing slice": (lambda files: files[5].unlink(), r"1 missing slice\(s\)", "MR_0007.dcm"),
    "duplicated slice": (lambda files: _edit(files[3], lambda ds: setattr(ds, "ImagePositionPatient",
                                                                        pydicom.dcmread(files[2]).ImagePositionPatient)),
                         "duplicated slice", "MR_000"),
    "non-uniform spacing": (lambda files: _edit(files[4], lambda ds: _shift(ds, (0, 0, 1.0))),
                            "non-uniform slice spacing", "MR_000"),
    "gantry tilt": (lambda files: [_edit(f, lambda ds, k=k: _shift(ds, (0, 0.8 * k, 0))) for k, f in enumerate(files)],
                    "gantry tilt", "MR_0002.dcm"),
    "multi-frame": (lambda files: _edit(files[2], lambda ds: setattr(ds, "NumberOfFrames", 2)),
                    "multi-frame", "MR_0003.dcm"),
    "mixed orientation": (lambda files: _edit(files[6], lambda ds: setattr(
        ds, "ImageOrientationPatient", ["1", "0", "0", "0", "0.9950042", "-0.0998334"])), "mixed orientations", "MR_0007.dcm"),
    "no position": (lambda files: _edit(files[1], lambda ds: delattr(ds, "ImagePositionPatient")),
                    "ImagePositionPatient missing", "MR_0002.dcm"),
}


@pytest.mark.parametrize("problem", sorted(BROKEN))
def test_broken_series_are_refused_naming_the_file(problem: str, tmp_path: Path) -> None:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])  # axial, so stored order = file order: MR_0001 is slice 0
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    files = write_series(tmp_path / "mr", np.full((6, 5, 9), 100.0), affine)
    for path in files:  # distinct SOP instances, as a scanner would send
        _edit(path, lambda ds: setattr(ds, "SOPInstanceUID", generate_uid()))
    change, message, file_name = BROKEN[problem]
    change(files)
    with pytest.raises(InputError, match=message) as info:
        read_series(tmp_path / "mr", subject_id="2BB001")
    text = str(info.value)
    assert text.startswith("2BB001: ") and f"mr/{file_name}" in text and "\n" not in text
