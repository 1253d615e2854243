"""Tests for pipeline.data.phantoms.head / pipeline.data.phantoms.anatomy and scripts.make_phantoms (tiny volumes)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pipeline.data.phantoms.anatomy import TISSUES, Tissue
from pipeline.data.phantoms.head import SIZES, make_phantom_subject, save_montage, subject_id, write_phantom_dataset
from scripts.make_phantoms import main as make_phantoms_main

PURE = 0.9  # tissue fraction above which a voxel counts as one tissue (partial volume excluded)


@pytest.fixture(scope="module")
def subject():
    return make_phantom_subject(seed=1, size="tiny", return_tissues=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    return out, write_phantom_dataset(out, n=2, seed=0, size="tiny")


def _pure(subject, tissue: Tissue) -> np.ndarray:
    sel = (subject.tissue_labels == tissue) & (subject.tissue_fractions.max(axis=0) >= PURE)
    assert sel.sum() >= 10, f"too few pure {tissue.name} voxels to test"
    return sel


def test_same_seed_gives_identical_arrays_and_other_seed_differs():
    a = make_phantom_subject(seed=7, size="tiny")
    b = make_phantom_subject(seed=7, size="tiny")
    c = make_phantom_subject(seed=8, size="tiny")
    for name in ("mr", "ct", "mask", "affine"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert not np.array_equal(a.ct, c.ct)
    assert a.tissue_labels is None  # tissues only on request


def test_dataset_layout_ids_and_no_leftover_temp_files(dataset):
    out, folders = dataset
    assert [f.name for f in folders] == ["1BP001", "1BP002"] == [subject_id(0), subject_id(1)]
    assert sorted(p.name for p in out.iterdir()) == ["1BP001", "1BP002"]
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == ["ct.nii.gz", "mask.nii.gz", "mr.nii.gz"]


def test_subject_does_not_depend_on_dataset_size(dataset, tmp_path):
    _, folders = dataset
    (single,) = write_phantom_dataset(tmp_path, n=1, seed=0, size="tiny")
    for name in ("mr", "ct", "mask"):
        a = np.asanyarray(nib.load(single / f"{name}.nii.gz").dataobj)
        b = np.asanyarray(nib.load(folders[0] / f"{name}.nii.gz").dataobj)
        assert np.array_equal(a, b), name


def test_written_geometry_dtypes_and_headers(dataset):
    _, folders = dataset
    imgs = {name: nib.load(folders[0] / f"{name}.nii.gz") for name in ("mr", "ct", "mask")}
    ref = imgs["mr"]
    assert ref.shape == SIZES["tiny"][0]
    for name, img in imgs.items():
        assert img.shape == ref.shape, name
        assert np.array_equal(img.affine, ref.affine), name
        qform, qcode = img.get_qform(coded=True)
        sform, scode = img.get_sform(coded=True)
        assert (int(qcode), int(scode)) == (1, 1), name
        np.testing.assert_allclose(qform, sform, atol=1e-4)
    assert nib.aff2axcodes(ref.affine) != ("R", "A", "S")
    zooms = ref.header.get_zooms()
    assert len(set(np.round(zooms, 3))) > 1  # anisotropic
    direction = ref.affine[:3, :3] / np.asarray(zooms)
    assert np.abs(direction - np.round(direction)).max() > 0.01  # oblique, not a pure axis permutation
    assert imgs["ct"].get_data_dtype() == np.int16
    assert imgs["mr"].get_data_dtype() == np.float32
    assert imgs["mask"].get_data_dtype() == np.uint8
    mask = np.asanyarray(imgs["mask"].dataobj)
    assert set(np.unique(mask)) == {0, 1}
    ct = np.asanyarray(imgs["ct"].dataobj)
    assert np.all(ct[mask == 0] == -1000)


def test_mask_is_the_whole_head_including_air_cavities(subject):
    inside = subject.tissue_labels != Tissue.AIR
    assert np.array_equal(subject.mask.astype(bool), inside)
    assert subject.mask[subject.tissue_labels == Tissue.SINUS_AIR].all()
    # Head fits in the FOV left-right and front-back (only the neck leaves the volume, at the bottom).
    assert not subject.mask[[0, -1]].any() and not subject.mask[:, [0, -1]].any()


def test_ct_hu_per_tissue(subject):
    ct = subject.ct.astype(float)
    cortical = ct[_pure(subject, Tissue.CORTICAL_BONE)]
    assert np.mean(cortical >= 1000) > 0.6 and np.median(cortical) <= TISSUES[Tissue.CORTICAL_BONE].hu_range[1]
    assert 300 <= np.median(ct[_pure(subject, Tissue.DIPLOE)]) <= 700
    brain = np.isin(subject.tissue_labels, [Tissue.GREY_MATTER, Tissue.WHITE_MATTER])
    assert 15 <= np.median(ct[brain]) <= 55
    assert np.median(ct[_pure(subject, Tissue.GREY_MATTER)]) > np.median(ct[_pure(subject, Tissue.WHITE_MATTER)])
    assert np.median(ct[_pure(subject, Tissue.FAT)]) < -40
    assert np.median(ct[_pure(subject, Tissue.SINUS_AIR)]) < -850
    assert np.all(ct[subject.tissue_labels == Tissue.AIR] == -1000)
    inside_soft = ct[_pure(subject, Tissue.WHITE_MATTER)]
    assert 5 < inside_soft.std() < 30  # CT-like noise, not noiseless


def test_mr_bone_and_air_dark_fat_brightest_wm_gm_csf(subject):
    median = {t: float(np.median(subject.mr[_pure(subject, t)])) for t in Tissue if t != Tissue.AIR}
    fat = median[Tissue.FAT]
    assert median[Tissue.CORTICAL_BONE] < 0.2 * fat
    assert median[Tissue.SINUS_AIR] < 0.2 * fat
    assert max(median, key=median.get) == Tissue.FAT
    assert median[Tissue.WHITE_MATTER] > median[Tissue.GREY_MATTER] > median[Tissue.CSF]
    assert subject.mr.dtype == np.float32 and subject.mr.min() >= 0  # magnitude image


def test_refuses_to_overwrite_then_overwrites_on_request(tmp_path):
    (folder,) = write_phantom_dataset(tmp_path, n=1, seed=3, size="tiny")
    before = (folder / "ct.nii.gz").read_bytes()
    with pytest.raises(FileExistsError, match="1BP001.*overwrite"):
        write_phantom_dataset(tmp_path, n=1, seed=4, size="tiny")
    assert (folder / "ct.nii.gz").read_bytes() == before
    write_phantom_dataset(tmp_path, n=1, seed=4, size="tiny", overwrite=True)
    assert (folder / "ct.nii.gz").read_bytes() != before


def test_bad_size_is_rejected():
    with pytest.raises(ValueError, match="unknown phantom size"):
        make_phantom_subject(seed=0, size="huge")


def test_montage_png_is_written(dataset, tmp_path):
    _, folders = dataset
    path = save_montage(folders, tmp_path / "figs" / "montage.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_dataset_and_default_montage_and_refuses_rerun(tmp_path, capsys):
    out = tmp_path / "ph"
    assert make_phantoms_main(["--out", str(out), "--n", "1", "--size", "tiny", "--seed", "2"]) == 0
    assert (out / "1BP001" / "mr.nii.gz").is_file() and (out / "montage.png").is_file()
    assert make_phantoms_main(["--out", str(out), "--n", "1", "--size", "tiny"]) == 2
    assert "1BP001" in capsys.readouterr().err
