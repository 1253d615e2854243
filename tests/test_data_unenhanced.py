"""A contrast-enhanced CT without its contrast agent (pipeline.data.unenhanced): iodine outside the skeleton goes,
the skeleton, lungs and soft tissue stay, the grid is the original's."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipeline.data.unenhanced import remove_iodine, skeleton_mask, write_unenhanced_ct
from pipeline.errors import InputError
from pipeline.io.volumes import write_nifti

SHAPE = (24, 20, 16)
# LPS-like storage with an offset and anisotropic voxels: the output must keep the CT's own grid
AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, -1.5, 0, 20.0], [0, 0, 3.0, -40.0], [0, 0, 0, 1]])
RIB, HEART = 7, 51


def _chest() -> tuple[np.ndarray, np.ndarray]:
    """``(hu, labels)``: soft tissue (40 HU) with a lung (-850), a labelled rib (1000 HU, a 500 HU partial-volume
    rim next to it, unlabelled), and a labelled enhanced heart (330 HU) with an unlabelled vessel (900 HU)."""
    hu = np.full(SHAPE, 40.0, np.float32)
    labels = np.zeros(SHAPE, np.int16)
    hu[2:10, 2:18, 2:14] = -850.0  # lung
    hu[12:14, 4:16, 4:12] = 1000.0  # rib
    labels[12:14, 4:16, 4:12] = RIB
    hu[14, 4:16, 4:12] = 500.0  # the rib's partial-volume rim, outside its label
    hu[17:22, 6:14, 5:11] = 330.0  # heart, enhanced
    labels[17:22, 6:14, 5:11] = HEART
    hu[4:6, 9:11, 2:14] = 900.0  # an enhanced vessel inside the lung, unlabelled
    return hu, labels


STRUCTURES = {RIB: "rib_left_5", HEART: "heart"}


def test_skeleton_mask_takes_skeletal_names_and_dilates():
    _, labels = _chest()
    tight = skeleton_mask(labels, STRUCTURES, dilate_voxels=0)
    assert np.array_equal(tight, labels == RIB)
    wide = skeleton_mask(labels, STRUCTURES, dilate_voxels=2)
    assert wide[14, 8, 8] and wide[15, 8, 8] and not wide[17, 8, 8]
    assert not skeleton_mask(labels, {HEART: "heart"}).any()


def test_remove_iodine_keeps_skeleton_lung_and_soft_tissue():
    hu, labels = _chest()
    plain = remove_iodine(hu, skeleton_mask(labels, STRUCTURES))
    assert plain is not hu and hu[19, 8, 8] == 330.0  # the input is left alone
    assert np.all(plain[17:22, 6:14, 5:11] == 40.0)  # heart: unenhanced blood
    assert np.all(plain[4:6, 9:11, 2:14] == 40.0)  # vessel in the lung
    assert np.all(plain[12:15, 4:16, 4:12] == hu[12:15, 4:16, 4:12])  # rib and its rim (within the dilation)
    untouched = hu <= 100.0
    assert np.array_equal(plain[untouched], hu[untouched])  # lung and soft tissue as they were
    assert plain.max() == 1000.0


def test_remove_iodine_refuses_a_mask_of_another_shape():
    hu, _ = _chest()
    with pytest.raises(ValueError, match="differ in shape"):
        remove_iodine(hu, np.zeros((2, 2, 2), bool))


def _subject(tmp_path: Path, *, mask_affine: np.ndarray = AFFINE, structures: bool = True) -> Path:
    hu, labels = _chest()
    folder = tmp_path / "in" / "CXR009"
    folder.mkdir(parents=True)
    write_nifti(hu.astype(np.int16), AFFINE, folder / "ct.nii.gz")
    write_nifti(labels, mask_affine, folder / "mask.nii.gz")
    if structures:
        pd.DataFrame({"id": list(STRUCTURES), "structure": list(STRUCTURES.values())}).to_csv(
            folder / "structures.csv", index=False)
    return folder


def test_write_unenhanced_ct_keeps_the_grid(tmp_path):
    folder = write_unenhanced_ct(_subject(tmp_path), tmp_path / "out")
    assert folder == tmp_path / "out" / "CXR009"
    img, ref = nib.load(folder / "ct.nii.gz"), nib.load(tmp_path / "in" / "CXR009" / "ct.nii.gz")
    assert img.shape == ref.shape and np.allclose(img.affine, ref.affine)
    assert img.get_data_dtype() == np.int16
    assert np.array_equal(img.header.get_qform(), ref.header.get_qform())
    data = np.asarray(img.dataobj)
    assert data[19, 8, 8] == 40 and data[12, 8, 8] == 1000 and data[5, 3, 3] == -850
    assert "contrast agent" in (folder / "SOURCE.txt").read_text()
    with pytest.raises(FileExistsError):
        write_unenhanced_ct(tmp_path / "in" / "CXR009", tmp_path / "out")
    write_unenhanced_ct(tmp_path / "in" / "CXR009", tmp_path / "out", overwrite=True)


def test_write_unenhanced_ct_names_the_subject_and_file_of_bad_input(tmp_path):
    with pytest.raises(InputError, match=r"CXR009: no .*structures\.csv"):
        write_unenhanced_ct(_subject(tmp_path, structures=False), tmp_path / "out")
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    with pytest.raises(InputError, match=r"CXR009: .*mask\.nii\.gz is not on the grid"):
        write_unenhanced_ct(_subject(tmp_path / "b", mask_affine=shifted), tmp_path / "out")


def test_an_unreadable_ct_is_one_input_error(tmp_path):
    folder = _subject(tmp_path)
    (folder / "ct.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match=r"CXR009: cannot read ct\.nii\.gz / mask\.nii\.gz"):
        write_unenhanced_ct(folder, tmp_path / "out")
