"""Baseline sCT methods: bulk density, tissue-class lookup, writing on the MR grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pipeline.sct.baselines import TissueLookup, bulk_density, write_baseline_predictions

N_BINS = 16
CENTRES = -1.0 + (np.arange(N_BINS) + 0.5) * (2.0 / N_BINS)


def hu_of_bin(k):
    return -1000.0 + 150.0 * np.asarray(k)


def _synthetic_subject(scale: float, *, empty_bin: int = 7):
    """MR whose in-mask 99.5th percentile is 100*scale (so normalised MR = mr/(50*scale) - 1), with each
    x-row in one bin, and CT = hu_of_bin(bin) -/0/+ 5 HU (median exactly hu_of_bin). Slice z=4 is outside
    the mask and holds values that would spoil the fit if used."""
    shape = (N_BINS, 6, 5)
    bins = np.broadcast_to(np.arange(N_BINS)[:, None, None], shape).copy()
    bins[empty_bin] = 6  # no training voxel in this bin
    mr = 50.0 * scale * (CENTRES[bins] + 1.0)
    mr[N_BINS - 1] = 100.0 * scale  # top 6 % of voxels define the percentile; +1 falls in the last bin
    ct = hu_of_bin(bins) + np.array([-5.0, 0.0, 5.0])[np.arange(6) % 3][None, :, None]
    mask = np.ones(shape, dtype=np.uint8)
    mask[:, :, 4] = 0
    mr[:, :, 4] = 0.0
    ct[:, :, 4] = 2000.0
    return mr.astype(np.float32), ct.astype(np.int16), mask, bins


def test_bulk_density_values():
    mask = np.zeros((4, 5, 6), dtype=np.uint8)
    mask[1:3, 1:4, 2:5] = 1
    sct = bulk_density(np.random.default_rng(0).random(mask.shape), mask)
    assert sct.shape == mask.shape and sct.dtype == np.float32
    assert np.all(sct[mask > 0] == 0.0) and np.all(sct[mask == 0] == -1000.0)
    with pytest.raises(ValueError, match="shape"):
        bulk_density(np.zeros((4, 5, 5)), mask)
    with pytest.raises(ValueError, match="empty"):
        bulk_density(np.zeros(mask.shape), np.zeros(mask.shape))


def test_tissue_lookup_recovers_known_mapping():
    subjects = [_synthetic_subject(1.0), _synthetic_subject(3.7)]  # intensity scale must not matter
    lookup = TissueLookup.fit((s[:3] for s in subjects), n_bins=N_BINS)
    filled = [k for k in range(N_BINS) if k != 7]
    np.testing.assert_array_equal(lookup.median_hu[filled], hu_of_bin(filled))
    assert lookup.n_voxels[7] == 0 and lookup.median_hu[7] == hu_of_bin(6)  # nearest filled bin (lower on a tie)
    assert lookup.n_voxels.sum() == 2 * N_BINS * 6 * 4  # the out-of-mask slice is not used

    mr, _, mask, bins = _synthetic_subject(0.2)
    sct = lookup.predict(mr, mask)
    inside = mask > 0
    np.testing.assert_array_equal(sct[inside], hu_of_bin(bins)[inside])
    assert np.all(sct[~inside] == -1000.0)

    restored = TissueLookup.from_json(lookup.to_json())
    np.testing.assert_array_equal(restored.predict(mr, mask), sct)
    with pytest.raises(ValueError, match="TissueLookup"):
        TissueLookup.from_json('{"kind": "other"}')


def _write_nifti(array, affine, path, *, dtype):
    image = nib.Nifti1Image(array.astype(dtype), affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=2)
    nib.save(image, path)
    return str(path)


def test_predictions_written_int16_on_mr_grid(tmp_path):
    mr, ct, mask, _ = _synthetic_subject(1.0)
    # oblique, anisotropic and LPS-like, without shear (a qform cannot hold shear: the two forms would
    # disagree, which writers refuse)
    a = np.deg2rad(3.0)
    rotation = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-1.9, -2.0, 2.5])
    affine[:3, 3] = (90.0, 110.0, -60.0)
    lookup = TissueLookup.fit([(mr, ct, mask)], n_bins=N_BINS)
    record = {
        "subject_id": "1BP001",
        "mr": _write_nifti(mr, affine, tmp_path / "mr.nii.gz", dtype=np.float32),
        "mask": _write_nifti(mask, affine, tmp_path / "mask.nii.gz", dtype=np.uint8),
    }
    out = tmp_path / "baselines"
    targets = write_baseline_predictions([record], output_dir=out, progress=False,
                                         predictors={"bulk_density": bulk_density, "tissue_lookup": lookup.predict})
    assert set(targets) == {"bulk_density", "tissue_lookup"}
    mr_image = nib.load(record["mr"])
    for name, expected in (("bulk_density", bulk_density(mr, mask)), ("tissue_lookup", lookup.predict(mr, mask))):
        image = nib.load(out / name / "1BP001" / "sct.nii.gz")
        assert image.get_data_dtype() == np.int16
        np.testing.assert_allclose(image.affine, mr_image.affine)
        assert int(image.header["sform_code"]) == 2 and int(image.header["qform_code"]) == 1
        np.testing.assert_array_equal(np.asarray(image.dataobj), np.rint(expected).astype(np.int16))

    with pytest.raises(FileExistsError):
        write_baseline_predictions([record], output_dir=out, predictors={"bulk_density": bulk_density}, progress=False)
    write_baseline_predictions([record], output_dir=out, predictors={"bulk_density": bulk_density},
                               overwrite=True, progress=False)

    shifted = affine.copy()
    shifted[0, 3] += 3.0
    bad = {**record, "mask": _write_nifti(mask, shifted, tmp_path / "mask_shifted.nii.gz", dtype=np.uint8)}
    with pytest.raises(ValueError, match=r"1BP001: mr \(mr.nii.gz\) and mask \(mask_shifted.nii.gz\) are not on the same grid"):
        write_baseline_predictions([bad], output_dir=tmp_path / "b2", predictors={"bulk_density": bulk_density},
                                   progress=False)
