"""pipeline.sct.outputs (NIfTI / DICOM / both, all-or-nothing) and the DICOM MR route through SCTPredictor:
the DICOM and the NIfTI of the same MR give the identical sCT, on the same grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from networks import Pix2PixUNet
from pipeline.data.phantoms.head import make_phantom_subject
from pipeline.errors import InputError
from pipeline.io.dicom import write_mr_dicom_series
from pipeline.sct.batch import resolve_inputs
from pipeline.sct.inference import SCTPredictor
from pipeline.sct.outputs import output_paths, write_sct_outputs

# Voxel axes stored as (P, S, L)-ish: a non-RAS, permuted, oblique NIfTI the DICOM writer must rearrange.
PERMUTE = [1, 2, 0]


def tiny_predictor() -> SCTPredictor:
    torch.manual_seed(0)
    generator = Pix2PixUNet(spatial_dims=2, in_channels=5, num_downs=3, base_channels=4).eval()
    return SCTPredictor(generator, mode="2.5d", patch_size=32, slab_size=5, overlap=0.25, device="cpu", progress=False)


def save_nifti(values: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    image = nib.Nifti1Image(values, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)
    return path


@pytest.fixture(scope="module")
def mr_pair(tmp_path_factory):
    """The same phantom MR (integer-valued, as DICOM stores it) as NIfTI and as a DICOM series, on the
    phantom's oblique LPS-like grid and on a permuted (P, S, L) one."""
    root = tmp_path_factory.mktemp("mr")
    subject = make_phantom_subject(seed=7, size="tiny")
    values = np.rint(subject.mr).astype(np.int16)
    pairs = {}
    for name, (array, affine) in {
        "oblique": (values, subject.affine),
        "permuted": (values.transpose(PERMUTE), subject.affine[:, [*PERMUTE, 3]]),
    }.items():
        nifti = save_nifti(array, affine, root / f"{name}.nii.gz")
        write_mr_dicom_series(array, affine=affine, out_dir=root / name / "mr",
                              identifiers={"PatientID": f"P-{name}", "PatientPosition": "HFP"})
        pairs[name] = (nifti, root / name / "mr")
    return pairs


def canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.as_closest_canonical(nib.load(path))
    return np.asarray(image.dataobj), image.affine


@pytest.mark.parametrize("grid", ["oblique", "permuted"])
def test_dicom_and_nifti_of_the_same_mr_give_the_identical_sct(mr_pair, grid: str, tmp_path: Path) -> None:
    nifti, dicom = mr_pair[grid]
    predictor = tiny_predictor()
    from_nifti = predictor.predict_file(nifti, tmp_path / "a" / "sct.nii.gz")
    from_dicom = predictor.predict_file(dicom, tmp_path / "b" / "sct.nii.gz", output_format="both")
    assert from_dicom == tmp_path / "b" / "sct.nii.gz" and (tmp_path / "b" / "sct_dicom").is_dir()
    values_nifti, affine_nifti = canonical(from_nifti)
    values_dicom, affine_dicom = canonical(from_dicom)
    np.testing.assert_array_equal(values_dicom, values_nifti)  # identical HU, voxel for voxel
    np.testing.assert_allclose(affine_dicom, affine_nifti, atol=1e-4)  # float32 NIfTI affines
    assert len(np.unique(values_nifti)) > 50  # a real image
    if grid == "oblique":  # the DICOM order is the file order here: the sCT is on the very same grid
        assert nib.load(from_dicom).shape == nib.load(nifti).shape
    ct = pydicom.dcmread(tmp_path / "b" / "sct_dicom" / "CT_0001.dcm")
    mr = pydicom.dcmread(dicom / "MR_0001.dcm")
    assert ct.PatientID == f"P-{grid}" and ct.PatientPosition == "HFP"
    assert (ct.StudyInstanceUID, ct.FrameOfReferenceUID) == (mr.StudyInstanceUID, mr.FrameOfReferenceUID)
    assert ct.SeriesInstanceUID != mr.SeriesInstanceUID and ct.SOPInstanceUID != mr.SOPInstanceUID


def test_paths_and_refusal_before_inference(mr_pair, tmp_path: Path) -> None:
    out = tmp_path / "1BA001" / "sct.nii.gz"
    assert output_paths(out, output_format="both") == {"nifti": out, "dicom": out.with_name("sct_dicom")}
    assert output_paths(out, output_format="dicom") == {"dicom": out.with_name("sct_dicom")}
    with pytest.raises(ValueError, match="output_format"):
        output_paths(out, output_format="dcm")
    out.with_name("sct_dicom").mkdir(parents=True)
    (out.with_name("sct_dicom") / "CT_0001.dcm").write_bytes(b"earlier export")

    class Exploding(SCTPredictor):
        def predict_array(self, *args, **kwargs):
            raise AssertionError("inference ran although the output exists")

    predictor = Exploding(torch.nn.Identity(), mode="2.5d", device="cpu", progress=False)
    with pytest.raises(FileExistsError, match="sct_dicom"):
        predictor.predict_file(mr_pair["oblique"][1], out, output_format="both")
    assert not out.exists() and (out.with_name("sct_dicom") / "CT_0001.dcm").read_bytes() == b"earlier export"


def test_overwrite_replaces_the_series_and_a_failure_leaves_nothing(mr_pair, tmp_path: Path) -> None:
    nifti, dicom = mr_pair["oblique"]
    hu = np.zeros(nib.load(nifti).shape, dtype=np.float32)
    out = tmp_path / "sct.nii.gz"
    first = write_sct_outputs(hu, mr_file=nifti, out_path=out, output_format="both", mr_dicom_dir=dicom)
    assert first == [out, tmp_path / "sct_dicom"]
    old_series = pydicom.dcmread(tmp_path / "sct_dicom" / "CT_0001.dcm").SeriesInstanceUID
    with pytest.raises(FileExistsError):
        write_sct_outputs(hu, mr_file=nifti, out_path=out, output_format="dicom", mr_dicom_dir=dicom)
    write_sct_outputs(hu + 100, mr_file=nifti, out_path=out, output_format="dicom", mr_dicom_dir=dicom, overwrite=True)
    ct = pydicom.dcmread(tmp_path / "sct_dicom" / "CT_0001.dcm")
    assert ct.SeriesInstanceUID != old_series and int(ct.pixel_array.max()) + float(ct.RescaleIntercept) == 100

    # The MR series of another grid must not lend its Frame of Reference: refused, nothing written.
    other = tmp_path / "elsewhere"
    shifted_affine = nib.load(nifti).affine.copy()
    shifted_affine[:3, 3] += [0.0, 1.0, 0.0]
    shifted = save_nifti(hu, shifted_affine, tmp_path / "shifted.nii.gz")
    with pytest.raises(InputError, match="not on the same grid"):
        write_sct_outputs(hu, mr_file=shifted, out_path=other / "sct.nii.gz", output_format="both",
                          mr_dicom_dir=dicom)
    assert not other.exists() or not any(other.iterdir())


def test_resolve_inputs_finds_dicom_subjects(mr_pair, tmp_path: Path) -> None:
    nifti, dicom = mr_pair["oblique"]
    root = tmp_path / "brain"
    (root / "1BA001").mkdir(parents=True)
    (root / "1BA001" / "mr").symlink_to(dicom, target_is_directory=True)  # <ID>/mr/ DICOM folder
    (root / "1BA002").mkdir()
    (root / "1BA002" / "mr.nii.gz").symlink_to(nifti)
    records = resolve_inputs(root)
    assert [(r["subject_id"], Path(r["mr"]).name) for r in records] == [("1BA001", "mr"), ("1BA002", "mr.nii.gz")]
    assert resolve_inputs(dicom) == [{"subject_id": "oblique", "mr": str(dicom)}]  # <ID>/mr -> ID
    (root / "1BA001" / "mr.nii.gz").symlink_to(nifti)
    with pytest.raises(InputError, match="1BA001: two MRs"):
        resolve_inputs(root)
