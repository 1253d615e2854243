"""pipeline.io.dicom and scripts.export_dicom: DICOM CT series round trip (values, geometry, tags), the
reference series check, dciodvfy, and the MR series writer."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy.spatial.transform import Rotation

from pipeline.errors import InputError
from pipeline.io.dicom import RESCALE_INTERCEPT, write_ct_dicom_series, write_mr_dicom_series
from scripts.export_dicom import main as export_main

SHAPE = (7, 9, 5)
SPACING = (0.8, 1.3, 2.5)  # anisotropic: non-square pixels catch a swapped PixelSpacing


def affine_from(axes_ras: np.ndarray, origin=(30.0, -20.0, 15.0), spacing=SPACING) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(axes_ras, dtype=float) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def oblique(degrees=(8.0, -5.0, 12.0)) -> np.ndarray:
    return Rotation.from_euler("xyz", degrees, degrees=True).as_matrix()


# Voxel axes roughly along L, P, S (LPS-ish, right-handed in LPS): DICOM order equals file order.
OBLIQUE_LPS = affine_from(np.diag([-1.0, -1.0, 1.0]) @ oblique())
# Other layouts that must be rearranged: RAS storage (nibabel default), radiological storage as written by
# dcm2niix (left-handed), an oblique sagittal acquisition (slices along left-right), and a coronal one.
REARRANGED = {
    "ras": affine_from(np.eye(3)),
    "radiological": affine_from(np.diag([-1.0, 1.0, 1.0]) @ oblique((3.0, 4.0, -6.0))),
    "sagittal": affine_from(oblique((0.0, 7.0, 0.0)) @ np.array([[0, 0, -1], [-1, 0, 0], [0, -1, 0]], float)),
    "coronal": affine_from(np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float)),
}


def hu_volume(shape=SHAPE) -> np.ndarray:
    hu = np.random.default_rng(1).integers(-1024, 2501, shape).astype(np.int16)
    hu[0, 0, 0], hu[-1, -1, -1], hu[1, 0, 0] = -1024, 2500, 0
    return hu


def write_sct(path: Path, affine: np.ndarray, hu: np.ndarray) -> Path:
    image = nib.Nifti1Image(hu, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)
    return path


def read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))  # sorted by position along the normal
    return reader.Execute()


def aligned_to(readback: sitk.Image, nifti: sitk.Image) -> sitk.Image:
    """The NIfTI with its voxel axes permuted/reversed to the read-back's order, positions unchanged
    (SimpleITK updates origin and direction), chosen from the two direction matrices."""
    cosines = np.reshape(readback.GetDirection(), (3, 3)).T @ np.reshape(nifti.GetDirection(), (3, 3))
    order = np.abs(cosines).argmax(axis=1)
    assert sorted(order.tolist()) == [0, 1, 2]
    permuted = sitk.PermuteAxes(nifti, [int(a) for a in order])
    return sitk.Flip(permuted, [bool(cosines[m, order[m]] < 0) for m in range(3)])


def assert_dciodvfy_clean(files) -> None:
    """No ``Error`` line from the DICOM IOD validator on any file (warnings are allowed)."""
    for path in files:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        report = result.stdout + result.stderr
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"
        assert "Image" in report  # the validator did recognise the IOD


def assert_same_grid_and_values(readback: sitk.Image, expected: sitk.Image) -> None:
    np.testing.assert_allclose(readback.GetOrigin(), expected.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(readback.GetSpacing(), expected.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(readback.GetDirection(), expected.GetDirection(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(readback), sitk.GetArrayFromImage(expected))


def make_reference_mr_series(folder: Path, *, affine: np.ndarray = OBLIQUE_LPS, shape=SHAPE,
                             study_uid: str | None = None) -> dict[str, str]:
    """An MR series (our writer) on the grid ``affine``/``shape`` with known identifiers, plus a non-DICOM file."""
    ids = dict(PatientName="Doe^Jane", PatientID="RT-0042", PatientBirthDate="19600229", PatientSex="F",
               StudyInstanceUID=study_uid or generate_uid(), StudyID="S17", StudyDate="20240105",
               AccessionNumber="ACC991", FrameOfReferenceUID=generate_uid(), PatientPosition="FFS")
    values = np.random.default_rng(2).integers(0, 4000, shape)
    write_mr_dicom_series(values, affine=affine, out_dir=folder, identifiers=ids)
    (folder / "notes.txt").write_text("not DICOM")  # ignored
    return ids


@pytest.fixture()
def oblique_sct(tmp_path: Path) -> tuple[Path, np.ndarray]:
    hu = hu_volume()
    return write_sct(tmp_path / "sct.nii.gz", OBLIQUE_LPS, hu), hu


def test_round_trip_oblique_lps_grid_matches_nifti_exactly(oblique_sct, tmp_path: Path) -> None:
    sct, hu = oblique_sct
    files = write_ct_dicom_series(hu, reference_image=sct, out_dir=tmp_path / "dicom")
    assert len(files) == SHAPE[2]
    readback, nifti = read_series(tmp_path / "dicom"), sitk.ReadImage(str(sct))
    assert readback.GetSize() == SHAPE
    assert_same_grid_and_values(readback, nifti)  # no rearrangement needed for an LPS-ish grid
    assert sitk.GetArrayFromImage(readback).min() == -1024 and sitk.GetArrayFromImage(readback).max() == 2500


@pytest.mark.parametrize("layout", sorted(REARRANGED))
def test_round_trip_other_layouts_keep_every_voxel_at_its_position(layout: str, tmp_path: Path) -> None:
    affine = REARRANGED[layout]
    hu = hu_volume()
    sct = write_sct(tmp_path / "sct.nii.gz", affine, hu)
    files = write_ct_dicom_series(hu, reference_image=sct, out_dir=tmp_path / "dicom")
    readback, nifti = read_series(tmp_path / "dicom"), sitk.ReadImage(str(sct))
    assert_same_grid_and_values(readback, aligned_to(readback, nifti))
    # Slices are the voxel axis closest to head-feet, ascending towards the head, and the image
    # axes point to patient left / posterior, as a viewer expects of an axial CT.
    direction = np.reshape(readback.GetDirection(), (3, 3))
    assert np.all(np.diag(direction) > 0.9)
    assert len(files) == SHAPE[int(np.abs(affine[2, :3]).argmax())]


def test_tags_uids_rescale_and_pixel_spacing_order(oblique_sct, tmp_path: Path) -> None:
    sct, hu = oblique_sct
    files = write_ct_dicom_series(hu, reference_image=sct, out_dir=tmp_path / "dicom")
    datasets = [pydicom.dcmread(f) for f in files]
    first = datasets[0]
    assert first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" == first.file_meta.MediaStorageSOPClassUID
    assert first.Modality == "CT" and list(first.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert "synthetic" in first.SeriesDescription.lower() and "SYNTHETIC" in first.DerivationDescription
    for keyword in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert len({str(ds[keyword].value) for ds in datasets}) == 1, keyword
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(files)
    assert [ds.InstanceNumber for ds in datasets] == list(range(1, len(files) + 1))
    assert first.Rows == SHAPE[1] and first.Columns == SHAPE[0]
    # PixelSpacing[0] = distance between rows (along a column = voxel axis j), [1] = between columns.
    np.testing.assert_allclose([float(v) for v in first.PixelSpacing], [1.3, 0.8], atol=1e-5)
    assert float(first.SliceThickness) == pytest.approx(2.5, abs=1e-5)
    assert float(first.RescaleSlope) == 1.0 and float(first.RescaleIntercept) == RESCALE_INTERCEPT
    assert first.PixelRepresentation == 0 and first.BitsAllocated == 16
    assert float(first.WindowWidth) > 0

    normal = np.cross(np.asarray(first.ImageOrientationPatient[:3], float),
                      np.asarray(first.ImageOrientationPatient[3:], float))
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    np.testing.assert_allclose(np.diff(positions @ normal), 2.5, atol=1e-4)
    lps = np.diag([-1.0, -1.0, 1.0]) @ OBLIQUE_LPS[:3, :3]
    np.testing.assert_allclose(positions[0], [-30.0, 20.0, 15.0], atol=1e-4)
    np.testing.assert_allclose(np.diff(positions, axis=0), np.tile(lps[:, 2], (len(files) - 1, 1)), atol=1e-4)
    for k, ds in enumerate(datasets):  # pydicom's own decoding: rows = voxel axis j, columns = axis i
        stored_hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(float(ds.RescaleIntercept))
        np.testing.assert_array_equal(stored_hu, hu[:, :, k].T)


def test_identifiers_copied_from_reference_dicom(oblique_sct, tmp_path: Path) -> None:
    sct, hu = oblique_sct
    ids = make_reference_mr_series(tmp_path / "mr_dicom")
    files = write_ct_dicom_series(hu, reference_image=sct, out_dir=tmp_path / "dicom",
                                  reference_dicom_dir=tmp_path / "mr_dicom")
    for path in (files[0], files[-1]):
        ds = pydicom.dcmread(path)
        for keyword, value in ids.items():
            assert str(ds[keyword].value) == value, keyword
        assert ds.Modality == "CT"
    source_series = pydicom.dcmread(tmp_path / "mr_dicom" / "MR_0001.dcm").SeriesInstanceUID
    assert ds.SeriesInstanceUID != source_series

    override = write_ct_dicom_series(hu, reference_image=sct, out_dir=tmp_path / "dicom2",
                                     reference_dicom_dir=tmp_path / "mr_dicom", patient_id="OTHER")
    assert pydicom.dcmread(override[0]).PatientID == "OTHER"


def test_reference_folder_with_two_series_is_rejected_unless_one_is_named(oblique_sct, tmp_path: Path) -> None:
    sct, hu = oblique_sct
    make_reference_mr_series(tmp_path / "one")
    make_reference_mr_series(tmp_path / "two")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for folder, prefix in ((tmp_path / "one", "A"), (tmp_path / "two", "B")):
        for path in folder.glob("MR_*.dcm"):
            path.rename(mixed / f"{prefix}{path.name}")
    with pytest.raises(InputError, match=r"2 DICOM series .*name one SeriesInstanceUID") as info:
        write_ct_dicom_series(hu, reference_image=sct, out_dir=tmp_path / "dicom", reference_dicom_dir=mixed)
    chosen = pydicom.dcmread(mixed / "BMR_0001.dcm")
    assert chosen.SeriesInstanceUID in str(info.value)  # the choices are listed
    assert not (tmp_path / "dicom").exists()
    files = write_ct_dicom_series(hu, reference_image=sct, out_dir=tmp_path / "dicom", reference_dicom_dir=mixed,
                                  reference_series_uid=chosen.SeriesInstanceUID)
    ct = pydicom.dcmread(files[0])
    assert ct.StudyInstanceUID == chosen.StudyInstanceUID and ct.FrameOfReferenceUID == chosen.FrameOfReferenceUID


@pytest.mark.parametrize("change", ["shifted", "rotated", "fewer slices"])
def test_reference_series_on_another_grid_is_refused(change: str, oblique_sct, tmp_path: Path) -> None:
    """Sharing the MR's Frame of Reference is only true for an sCT on the MR's grid: never copied blindly."""
    sct, hu = oblique_sct
    affine, shape = OBLIQUE_LPS.copy(), SHAPE
    if change == "shifted":
        affine[:3, 3] += [0.0, 0.0, 0.5]
    elif change == "rotated":
        affine[:3, :3] = oblique((0.0, 0.0, 1.0)) @ affine[:3, :3]
    else:
        shape = SHAPE[:2] + (SHAPE[2] - 1,)
    make_reference_mr_series(tmp_path / "mr", affine=affine, shape=shape)
    with pytest.raises(InputError, match="not on the same grid"):
        write_ct_dicom_series(hu, reference_image=sct, out_dir=tmp_path / "dicom", reference_dicom_dir=tmp_path / "mr")
    assert not (tmp_path / "dicom").exists()


def test_reference_in_another_voxel_order_is_accepted(tmp_path: Path) -> None:
    """An sCT NIfTI stored radiologically (as dcm2niix writes) is on the MR series' grid: same points."""
    hu = hu_volume()
    flipped = OBLIQUE_LPS @ np.array([[-1, 0, 0, SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    sct = write_sct(tmp_path / "sct.nii.gz", flipped, hu[::-1])
    ids = make_reference_mr_series(tmp_path / "mr")
    files = write_ct_dicom_series(hu[::-1], reference_image=sct, out_dir=tmp_path / "dicom",
                                  reference_dicom_dir=tmp_path / "mr")
    assert pydicom.dcmread(files[0]).FrameOfReferenceUID == ids["FrameOfReferenceUID"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_series(tmp_path / "dicom")), hu.transpose(2, 1, 0))


def test_version_model_and_patient_position_are_recorded(oblique_sct, tmp_path: Path, caplog) -> None:
    sct, hu = oblique_sct
    with caplog.at_level("WARNING"):
        files = write_ct_dicom_series(hu, reference_image=sct, out_dir=tmp_path / "dicom", model_id="card-1f2e3d",
                                      software_version="9.8.7")
    ds = pydicom.dcmread(files[0])
    assert list(ds.SoftwareVersions) == ["rtsynth 9.8.7", "card-1f2e3d"]
    assert "card-1f2e3d" in ds.DerivationDescription and "9.8.7" in ds.DerivationDescription
    assert ds.PatientPosition == "HFS" and "HFS" in caplog.text  # assumed, and said so
    assert ds.StudyID  # a new study gets an ID (dciodvfy warns about an empty one)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
@pytest.mark.parametrize("with_reference", [False, True], ids=["no-reference", "mr-reference"])
def test_dciodvfy_reports_no_error_on_any_file(with_reference: bool, oblique_sct, tmp_path: Path) -> None:
    sct, hu = oblique_sct
    reference = None
    if with_reference:
        make_reference_mr_series(tmp_path / "mr")
        reference = tmp_path / "mr"
        assert_dciodvfy_clean(sorted(reference.glob("MR_*.dcm")))  # our MR writer too
    files = write_ct_dicom_series(hu, reference_image=sct, out_dir=tmp_path / "dicom", reference_dicom_dir=reference)
    assert_dciodvfy_clean(files)


def test_without_reference_a_new_study_and_frame_are_created(oblique_sct, tmp_path: Path) -> None:
    sct, hu = oblique_sct
    first = pydicom.dcmread(write_ct_dicom_series(hu, reference_image=sct, out_dir=tmp_path / "a")[0])
    second = pydicom.dcmread(write_ct_dicom_series(hu, reference_image=sct, out_dir=tmp_path / "b")[0])
    assert first.StudyInstanceUID != second.StudyInstanceUID
    assert first.FrameOfReferenceUID != second.FrameOfReferenceUID
    assert first.SeriesInstanceUID != second.SeriesInstanceUID


def test_refuses_non_empty_folder_and_overwrite_replaces_the_series(oblique_sct, tmp_path: Path) -> None:
    sct, hu = oblique_sct
    out = tmp_path / "dicom"
    out.mkdir()
    (out / "CT_0009.dcm").write_bytes(b"stale slice of an earlier, longer export")
    (out / "keep.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="not empty.*--overwrite"):
        write_ct_dicom_series(hu, reference_image=sct, out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["CT_0009.dcm", "keep.txt"]

    files = write_ct_dicom_series(hu, reference_image=sct, out_dir=out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([f.name for f in files] + ["keep.txt"])


def test_bad_inputs_are_rejected(oblique_sct, tmp_path: Path) -> None:
    sct, hu = oblique_sct
    with pytest.raises(ValueError, match="does not match the grid"):
        write_ct_dicom_series(hu.transpose(1, 0, 2), reference_image=sct, out_dir=tmp_path / "a")
    sheared = OBLIQUE_LPS.copy()
    sheared[0, 2] += 0.4  # gantry-tilt-like shear
    sheared_sct = write_sct(tmp_path / "sheared.nii.gz", sheared, hu)
    with pytest.raises(ValueError, match="not orthogonal"):
        write_ct_dicom_series(hu, reference_image=sheared_sct, out_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="NaN"):
        write_ct_dicom_series(np.where(hu > 2000, np.nan, hu), reference_image=sct, out_dir=tmp_path / "c")
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))


def test_cli_exports_and_refuses_to_overwrite(oblique_sct, tmp_path: Path, capsys) -> None:
    sct, hu = oblique_sct
    make_reference_mr_series(tmp_path / "mr_dicom")
    out = tmp_path / "dicom"
    assert export_main([str(sct), str(out), "--reference-dicom", str(tmp_path / "mr_dicom")]) == 0
    assert len(list(out.glob("CT_*.dcm"))) == SHAPE[2]
    assert pydicom.dcmread(out / "CT_0001.dcm").PatientID == "RT-0042"
    assert export_main([str(sct), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert export_main([str(sct), str(out), "--overwrite"]) == 0
    assert np.array_equal(sitk.GetArrayFromImage(read_series(out)), np.asarray(hu).transpose(2, 1, 0))
