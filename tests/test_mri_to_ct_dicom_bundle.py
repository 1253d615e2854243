"""Issue 12 end to end, as a user runs it: DICOM MR series -> inference bundle (subprocess) -> DICOM CT series,
checked by the DICOM validator (dciodvfy) and read back by pydicom, SimpleITK and highdicom against the
NIfTI sCT of the same run (values <= 0.5 HU, positions <= 1e-3 mm); the ONNX runtime through the bundle."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from scipy.spatial.transform import Rotation

from bundle_runner import REPO, run_bundle
from networks import Pix2PixUNet
from pipeline.data.phantoms.head import make_phantom_subject
from pipeline.io.dicom import write_mr_dicom_series
from pipeline.io.geometry import LPS_TO_RAS, itk_affine_ras

CONFIG = str(REPO / "bundles" / "mri_to_ct" / "configs" / "inference.json")
TINY = ["--num_downs", "3", "--base_channels", "4", "--patch_size", "32", "--overlap", "0.25", "--device", "cpu"]
IDS = {"PatientID": "RT-7", "PatientName": "Doe^Jo", "StudyID": "S1", "PatientPosition": "HFS"}


def world_image(values: np.ndarray, affine_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Any reader's (array, voxel -> RAS affine) in nibabel's closest-canonical order, for comparison."""
    image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(values, dtype=np.float32), affine_ras))
    return np.asarray(image.dataobj), image.affine


def assert_same_image(got: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> None:
    (values, affine), (expected_values, expected_affine) = got, expected
    assert values.shape == expected_values.shape
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in values.shape], [1], indexing="ij")).reshape(4, -1)
    assert np.abs(affine @ corners - expected_affine @ corners).max() <= 1e-3  # mm, at every corner
    assert np.abs(values - expected_values).max() <= 0.5  # HU


def read_with_pydicom(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """By hand from the tags: slices sorted along the normal, voxel (slice, row, column) -> LPS -> RAS."""
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    first = datasets[0]
    row, column = np.asarray(first.ImageOrientationPatient[:3], float), np.asarray(first.ImageOrientationPatient[3:], float)
    normal = np.cross(row, column)
    datasets.sort(key=lambda ds: np.asarray(ds.ImagePositionPatient, float) @ normal)
    values = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets])
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in datasets])
    affine = np.eye(4)
    affine[:3, 0] = (positions[-1] - positions[0]) / (len(positions) - 1)
    affine[:3, 1] = column * float(first.PixelSpacing[0])
    affine[:3, 2] = row * float(first.PixelSpacing[1])
    affine[:3, 3] = positions[0]
    return world_image(values, LPS_TO_RAS @ affine)


def read_with_simpleitk(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    return world_image(sitk.GetArrayFromImage(image).transpose(2, 1, 0), itk_affine_ras(image))


def read_with_highdicom(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    highdicom = pytest.importorskip("highdicom")
    volume = highdicom.get_volume_from_series([pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))])
    return world_image(volume.array, LPS_TO_RAS @ volume.affine)  # highdicom: voxel -> LPS frame of reference


def dciodvfy_errors(folder: Path) -> list[str]:
    errors = []
    for path in sorted(folder.glob("*.dcm")):
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors += [f"{path.name}: {line}" for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    return errors


@pytest.fixture(scope="module")
def bundle_run(tmp_path_factory):
    """Two DICOM MR subjects (the phantom's oblique LPS-like grid, and a 20-degree oblique one), a tiny
    checkpoint, then: export_onnx, inference with output_format both (PyTorch), inference with the ONNX runtime."""
    root = tmp_path_factory.mktemp("bundle")
    for index, extra_rotation in ((1, None), (2, (20.0, -12.0, 8.0))):
        subject = make_phantom_subject(seed=20 + index, size="tiny")
        affine = subject.affine.copy()
        if extra_rotation is not None:
            affine[:3, :3] = Rotation.from_euler("xyz", extra_rotation, degrees=True).as_matrix() @ affine[:3, :3]
        write_mr_dicom_series(np.rint(subject.mr), affine=affine, out_dir=root / "dicom" / f"1BP00{index}" / "mr",
                              identifiers=IDS)
    torch.manual_seed(0)
    generator = Pix2PixUNet(spatial_dims=2, in_channels=5, num_downs=3, base_channels=4)
    (root / "out" / "models").mkdir(parents=True)
    torch.save(generator.state_dict(), root / "out" / "models" / "model.pt")
    common = ["--output_dir", str(root / "out"), *TINY]
    run_bundle(CONFIG, "export_onnx", *common)
    run_bundle(CONFIG, "--input", str(root / "dicom"), "--output_format", "both", *common)
    run_bundle(CONFIG, "--input", str(root / "dicom"), "--runtime", "onnx", "--prediction_dir", str(root / "onnx"), *common)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("subject_id", ["1BP001", "1BP002"])
def test_dicom_mr_to_validated_dicom_ct(bundle_run: Path, subject_id: str) -> None:
    predictions = bundle_run / "out" / "predictions" / subject_id
    sct_nifti, series = predictions / "sct.nii.gz", predictions / "sct_dicom"
    mr_folder = bundle_run / "dicom" / subject_id / "mr"
    nifti = nib.load(sct_nifti)
    expected = world_image(np.asarray(nifti.dataobj), nifti.affine)
    assert expected[0].std() > 0 and (expected[0] == -1000).any()  # an image, air outside the body

    if shutil.which("dciodvfy"):  # CI installs dicom3tools (.ci/run)
        assert dciodvfy_errors(series) == []
    for reader in (read_with_pydicom, read_with_simpleitk, read_with_highdicom):
        assert_same_image(reader(series), expected)
    # The sCT is on the MR series' grid: every voxel centre of one is a voxel centre of the other.
    mr_positions = read_with_simpleitk(mr_folder)
    assert_same_image((expected[0], mr_positions[1]), expected)

    ct, mr = pydicom.dcmread(series / "CT_0001.dcm"), pydicom.dcmread(mr_folder / "MR_0001.dcm")
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "StudyID", "FrameOfReferenceUID", "PatientPosition"):
        assert ct[keyword].value == mr[keyword].value, keyword
    assert ct.SeriesInstanceUID != mr.SeriesInstanceUID and ct.Modality == "CT"
    assert list(ct.ImageType)[:2] == ["DERIVED", "SECONDARY"] and str(ct.SoftwareVersions).startswith("rtsynth ")

    onnx = nib.load(bundle_run / "onnx" / subject_id / "sct.nii.gz")
    np.testing.assert_array_equal(onnx.affine, nifti.affine)
    assert np.abs(np.asarray(onnx.dataobj).astype(int) - np.asarray(nifti.dataobj).astype(int)).max() <= 1
