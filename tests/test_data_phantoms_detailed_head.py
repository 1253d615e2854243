"""Tests for pipeline.data.phantoms.detailed_head: the subject, its CT and MR families, files and montage."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from pipeline.data.phantoms.detailed_head import (SIZES, detailed_subject_id, make_detailed_subject,
                                                  save_detailed_montage, write_detailed_dataset)
from pipeline.data.phantoms.head_tissues import HeadTissue as T

PURE = 0.95


@pytest.fixture(scope="module")
def subject():
    return make_detailed_subject(seed=5, size="2mm", families=("spgr", "mprage", "t2_tse"), return_tissues=True,
                                 return_floor=True)


def _pure(subject, tissue):
    """Voxels of one tissue whose neighbours are that tissue too (the point spread mixes in neighbours)."""
    from scipy import ndimage

    pure = (subject.tissue_labels == tissue) & (subject.tissue_fractions.max(axis=0) >= PURE)
    return ndimage.binary_erosion(pure)


def test_same_seed_same_subject_and_each_family_independent_of_the_others():
    a = make_detailed_subject(seed=2, size="tiny", families=("spgr",))
    b = make_detailed_subject(seed=2, size="tiny", families=("mprage", "spgr"))
    c = make_detailed_subject(seed=3, size="tiny", families=("spgr",))
    for name in ("ct", "mask", "affine"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert a.mr["spgr"].tobytes() == b.mr["spgr"].tobytes()
    assert not np.array_equal(a.ct, c.ct)
    assert a.record["mr"]["spgr"] == b.record["mr"]["spgr"]
    floored = make_detailed_subject(seed=2, size="tiny", families=("spgr",), return_floor=True)
    assert a.registration_floor is None and set(floored.registration_floor) == {"spgr"}
    for name in ("ct", "mask"):  # keeping the floor draws nothing more
        assert getattr(a, name).tobytes() == getattr(floored, name).tobytes(), name
    assert a.mr["spgr"].tobytes() == floored.mr["spgr"].tobytes()
    with pytest.raises(ValueError, match="families"):
        make_detailed_subject(seed=2, size="tiny", families=("spgr", "spgr"))
    with pytest.raises(ValueError, match="families"):
        make_detailed_subject(seed=2, size="tiny", families=("flair",))


def test_grid_is_oblique_lps_like_with_the_preset_spacing(subject):
    assert subject.ct.shape == subject.mask.shape == SIZES["2mm"][0]
    assert nib.aff2axcodes(subject.affine) != ("R", "A", "S")
    zooms = np.sqrt((subject.affine[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(zooms, SIZES["2mm"][1])
    direction = subject.affine[:3, :3] / zooms
    assert np.abs(direction - np.round(direction)).max() > 0.01
    assert subject.ct.dtype == np.int16 and subject.mask.dtype == np.uint8
    assert all(mr.dtype == np.float32 and mr.shape == subject.ct.shape for mr in subject.mr.values())


def test_ct_follows_the_tissue_table_with_noise_of_10_to_20_hu(subject):
    ct = subject.ct.astype(float)
    assert np.all(ct[subject.mask == 0] == -1000)
    assert np.median(ct[_pure(subject, T.SINUS_AIR)]) < -800
    assert np.median(ct[_pure(subject, T.CORTICAL_BONE)]) > 900
    assert np.median(ct[_pure(subject, T.FAT)]) < -50
    assert 0 < np.median(ct[_pure(subject, T.MUSCLE)]) < 100
    assert (ct > 2000).sum() > 0  # enamel
    wm = _pure(subject, T.WHITE_MATTER)
    assert 8 < ct[wm].std() < 25
    assert 10.0 <= subject.record["ct"]["noise_sd_hu"] <= 20.0
    np.testing.assert_array_equal(subject.mask, subject.tissue_fractions[T.AIR] < 0.5)


def test_mr_families_differ_in_contrast_but_bone_and_air_stay_dark(subject):
    ratios = {}
    for family, mr in subject.mr.items():
        fat = np.median(mr[_pure(subject, T.FAT)])
        for dark in (T.CORTICAL_BONE, T.SINUS_AIR):
            assert np.median(mr[_pure(subject, dark)]) < 0.2 * fat, (family, dark)
        ratios[family] = np.median(mr[_pure(subject, T.CSF)]) / np.median(mr[_pure(subject, T.WHITE_MATTER)])
    assert ratios["t2_tse"] > 2 > 1 > ratios["spgr"] > ratios["mprage"]  # CSF: bright in T2, nulled by inversion


def test_each_family_has_its_own_scanner_and_a_small_misregistration(subject):
    scanners = subject.record["mr"]
    assert set(scanners) == {"spgr", "mprage", "t2_tse"}
    assert scanners["spgr"]["tr_ms"] < 30 < scanners["mprage"]["tr_ms"]
    for record in scanners.values():
        mis = record["misregistration"]
        assert 0.05 < mis["rms_mm"] < 1.5 and mis["max_mm"] < 3.0
    json.dumps(subject.record)  # JSON-ready


def test_registration_floor_differs_from_the_ct_by_its_noise_inside_and_by_the_misregistration_at_edges(subject):
    from scipy import ndimage

    noise_sd = subject.record["ct"]["noise_sd_hu"]
    body = subject.mask > 0
    wm = _pure(subject, T.WHITE_MATTER)
    bone = ndimage.binary_dilation(subject.tissue_labels == T.CORTICAL_BONE) & body
    for family, floor in subject.registration_floor.items():
        assert floor.dtype == np.int16 and floor.shape == subject.ct.shape
        error = subject.ct.astype(float) - floor
        # inside white matter the CT is the floor plus its noise (and a little texture moved by < 1 voxel)
        assert 0.8 * noise_sd < error[wm].std() < 1.3 * noise_sd, family
        assert abs(error[wm].mean()) < 0.2 * noise_sd, family
        # at bone edges a sub-millimetre shift of a ~1000 HU step costs far more than the noise
        assert np.abs(error[bone]).mean() > 3 * np.abs(error[wm]).mean(), family
    # each family's MR was moved its own way
    floors = subject.registration_floor
    assert not np.array_equal(floors["spgr"], floors["mprage"])


def test_dataset_files_record_and_montage(tmp_path):
    folders = write_detailed_dataset(tmp_path / "d", n=2, seed=0, size="tiny", families=("spgr", "t2_tse"))
    assert [f.name for f in folders] == [detailed_subject_id(0), detailed_subject_id(1)] == ["1BD001", "1BD002"]
    names = sorted(p.name for p in folders[0].iterdir())
    assert names == ["ct.nii.gz", "mask.nii.gz", "mr.nii.gz", "mr_t2_tse.nii.gz", "phantom.json"]
    record = json.loads((folders[0] / "phantom.json").read_text())
    assert record["families"] == {"spgr": "mr.nii.gz", "t2_tse": "mr_t2_tse.nii.gz"}
    assert record["mr"]["t2_tse"]["family"] == "t2_tse"
    ct, mr = nib.load(folders[0] / "ct.nii.gz"), nib.load(folders[0] / "mr_t2_tse.nii.gz")
    np.testing.assert_array_equal(ct.affine, mr.affine)
    assert ct.get_data_dtype() == np.int16
    (single,) = write_detailed_dataset(tmp_path / "one", n=1, seed=0, size="tiny", families=("spgr", "t2_tse"))
    for name in names[:-1]:
        assert np.array_equal(np.asanyarray(nib.load(single / name).dataobj),
                              np.asanyarray(nib.load(folders[0] / name).dataobj)), name
    with pytest.raises(FileExistsError, match="1BD001"):
        write_detailed_dataset(tmp_path / "d", n=1, seed=0, size="tiny")
    png = save_detailed_montage(folders, tmp_path / "montage.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_visible_floor_leaves_out_only_what_the_mr_cannot_show(subject):
    """The MR-visible floor is the registration floor without the per-subject HU offsets (a constant per tissue)
    and the density field of cortical bone and teeth (which give no MR signal): inside white matter the two differ
    by a constant, inside cortical bone by a field that varies from voxel to voxel."""
    assert set(subject.visible_floor) == set(subject.registration_floor)
    wm = _pure(subject, T.WHITE_MATTER)
    cortical = (subject.tissue_labels == T.CORTICAL_BONE) & (subject.tissue_fractions.max(axis=0) >= PURE)
    assert wm.sum() > 100 and cortical.sum() > 100
    for family, visible in subject.visible_floor.items():
        assert visible.dtype == np.int16 and visible.shape == subject.ct.shape
        difference = subject.registration_floor[family].astype(float) - visible
        assert abs(difference[wm].mean()) < 4 * 8.0 and difference[wm].std() < 2.0, family  # the offset, one value
        assert difference[cortical].std() > 30.0, family  # 200 HU x a smooth unit field, moved with the MR
