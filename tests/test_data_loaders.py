"""Tests for pipeline.data.loaders: mode helpers, the deterministic preprocessing (RAS orientation,
resampling, body mask, MR normalisation), training crops per mode through the bundle's sampler (shapes,
alignment of MR/CT/mask, foreground sampling, left-right flips, planes), validation volumes, ``drop_missing``
and ``make_loader``.

Data: two tiny head phantoms (:func:`pipeline.data.phantoms.head.write_phantom_dataset`) listed in a
manifest (:mod:`pipeline.data.manifest`); expected values come from the NIfTI files read with nibabel.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, MetaTensor
from monai.transforms import Compose

from pipeline.data.loaders import (
    MODES,
    check_mode,
    drop_missing,
    input_channels,
    make_loader,
    patch_shape,
    planes_for_mode,
    preprocessing,
    spatial_dims,
    training_sampler,
    validation_transforms,
)
from pipeline.data.manifest import assign_splits, find_subjects, load_split, write_manifest
from pipeline.data.phantoms.head import write_phantom_dataset

PATCH = 8  # small enough that no crop centre inside the tiny head needs shifting in-plane


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("loaders")
    write_phantom_dataset(root / "data", n=2, seed=5, size="tiny")
    table = assign_splits(find_subjects(root / "data"), val_fraction=0.5, test_fraction=0.0, seed=0)
    return write_manifest(table, root / "manifest.csv")


@pytest.fixture(scope="module")
def record(manifest):
    return load_split(manifest, "train")[0]


def canonical(path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and affine of a file after nibabel's closest-RAS reorientation (flips/permutations only)."""
    image = nib.as_closest_canonical(nib.load(path))
    return np.asarray(image.dataobj, dtype=np.float32), image.affine


def expected_mr_unit(mr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-subject MR scaling written out: 0 -> -1, the 99.5th percentile inside the mask -> +1, clipped."""
    top = np.percentile(mr[mask > 0], 99.5)
    return np.clip(mr * (2.0 / top) - 1.0, -1.0, 1.0)


def locate(patch: np.ndarray, volume: np.ndarray) -> list[tuple[int, ...]]:
    """All offsets where ``patch`` occurs exactly in ``volume`` (same number of dimensions)."""
    limits = np.array(volume.shape) - np.array(patch.shape)
    candidates = [c for c in np.argwhere(volume == patch.flat[0]) if np.all(c <= limits)]
    return [tuple(int(i) for i in c) for c in candidates
            if np.array_equal(volume[tuple(slice(i, i + n) for i, n in zip(c, patch.shape))], patch)]


# ---------------------------------------------------------------------------------------------------- modes


def test_check_mode_accepts_the_three_modes_and_names_them_otherwise():
    assert MODES == ("2d", "2.5d", "3d")
    for mode in MODES:
        assert check_mode(mode) == mode
    for bad in ("2D", "25d", "4d", ""):
        with pytest.raises(ValueError, match=r"mode must be one of .*'2d'.*'2\.5d'.*'3d'"):
            check_mode(bad)


def test_input_channels_and_spatial_dims_per_mode():
    assert input_channels(mode="2.5d", slab_size=7) == 7
    assert input_channels(mode="2.5d", slab_size=3) == 3
    assert input_channels(mode="2d", slab_size=7) == 1
    assert input_channels(mode="3d", slab_size=7) == 1
    assert [spatial_dims(m) for m in ("2d", "2.5d", "3d")] == [2, 2, 3]
    with pytest.raises(ValueError):
        input_channels(mode="4d", slab_size=5)
    with pytest.raises(ValueError):
        spatial_dims("volume")


def test_patch_shape_per_mode():
    assert patch_shape(mode="2d", patch_size=64, slab_size=5) == (64, 64, 1)
    assert patch_shape(mode="2.5d", patch_size=64, slab_size=5) == (64, 64, 5)
    assert patch_shape(mode="3d", patch_size=32, slab_size=5) == (32, 32, 32)
    with pytest.raises(ValueError):
        patch_shape(mode="2.5D", patch_size=64, slab_size=5)


# ---------------------------------------------------------------------------------------------------- preprocessing


def test_validation_volumes_are_ras_with_hu_ct_and_normalised_mr(record):
    sample = validation_transforms()(dict(record))
    ct, ct_affine = canonical(record["ct"])
    mask, _ = canonical(record["mask"])
    mr, _ = canonical(record["mr"])
    for key, reference in (("ct", ct), ("mask", mask)):
        value = sample[key]
        assert isinstance(value, MetaTensor) and value.dtype == torch.float32
        assert tuple(value.shape) == (1, *reference.shape), key
        np.testing.assert_array_equal(value[0].numpy(), reference, err_msg=key)  # orientation only: exact
    np.testing.assert_allclose(np.asarray(sample["ct"].affine), ct_affine, atol=1e-4)
    assert set(np.unique(sample["mask"].numpy())) == {0.0, 1.0}
    assert float(sample["ct"].min()) < -900 and float(sample["ct"].max()) > 1000  # HU, not [-1, 1]
    np.testing.assert_allclose(sample["mr"][0].numpy(), expected_mr_unit(mr, mask), atol=1e-5)
    assert sample["subject_id"] == record["subject_id"]


def test_preprocessing_without_ct_makes_a_mask_from_the_mr(record):
    mr_only = {"subject_id": record["subject_id"], "mr": record["mr"]}
    chain = preprocessing(with_ct=False)
    assert isinstance(chain, list)
    sample = Compose(chain)(mr_only)
    assert "ct" not in sample
    mask = sample["mask"][0].numpy()
    truth, _ = canonical(record["mask"])
    assert mask.shape == truth.shape and set(np.unique(mask)) <= {0.0, 1.0}
    dice = 2 * np.sum((mask > 0) & (truth > 0)) / (np.sum(mask > 0) + np.sum(truth > 0))
    assert dice > 0.9
    mr, _ = canonical(record["mr"])
    np.testing.assert_allclose(sample["mr"][0].numpy(), expected_mr_unit(mr, mask), atol=1e-5)


def test_target_spacing_resamples_every_key_to_the_requested_voxel_size(record):
    sample = validation_transforms(target_spacing=(8.0, 8.0, 10.0))(dict(record))
    ct, affine = canonical(record["ct"])
    zooms = np.linalg.norm(affine[:3, :3], axis=0)  # (4, 4, 5) mm for the tiny phantom
    new_zooms = np.linalg.norm(np.asarray(sample["ct"].affine)[:3, :3], axis=0)
    np.testing.assert_allclose(new_zooms, [8.0, 8.0, 10.0], atol=1e-3)
    shape = tuple(sample["ct"].shape[1:])
    for n, zoom, new_shape, new_zoom in zip(ct.shape, zooms, shape, (8.0, 8.0, 10.0)):
        assert abs(new_shape * new_zoom - n * zoom) <= new_zoom  # same field of view, within one new voxel
    for key in ("mr", "mask"):
        assert tuple(sample[key].shape[1:]) == shape, key
    assert set(np.unique(sample["mask"].numpy())) <= {0.0, 1.0}  # nearest neighbour for the mask
    with pytest.raises(ValueError, match="target_spacing"):
        validation_transforms(target_spacing=(1.0, 1.0))


# ---------------------------------------------------------------------------------------------------- training patches


def edge_padded(volume: np.ndarray, slab_size: int) -> np.ndarray:
    """``volume`` with ``slab_size // 2`` copies of its first and last slice added along the last axis: every
    2.5D training slab is a window of it (slabs past the ends replicate the edge slices, as at inference)."""
    half = slab_size // 2
    return np.pad(volume, ((0, 0), (0, 0), (half, half)), mode="edge")


def crops(record, *, mode="2.5d", slab_size=3, count=3, **options) -> list[dict]:
    """``count`` training crops of one subject from :func:`training_sampler` (the bundle's path), one dict each."""
    sampler = training_sampler([record], mode=mode, patch_size=PATCH, slab_size=slab_size, batch_size=1,
                               samples_per_volume=count, progress=False, **{"flip_lr": False, **options})
    batch = sampler.draw()
    return [{key: value[n] for key, value in batch.items()} for n in range(count)]


@pytest.mark.parametrize(("mode", "slab_size", "mr_shape", "ct_shape"), [
    ("2d", 5, (1, PATCH, PATCH), (1, PATCH, PATCH)),
    ("2.5d", 3, (3, PATCH, PATCH), (1, PATCH, PATCH)),
    ("3d", 5, (1, PATCH, PATCH, PATCH), (1, PATCH, PATCH, PATCH)),
])
def test_training_patches_have_the_mode_shapes_and_come_from_one_place(record, mode, slab_size, mr_shape, ct_shape):
    samples = crops(record, mode=mode, slab_size=slab_size, seed=0)
    volumes = validation_transforms()(dict(record))
    k = slab_size if mode == "2.5d" else 1
    mr = edge_padded(volumes["mr"][0].numpy(), k)
    ct_unit = edge_padded((np.clip(volumes["ct"][0].numpy(), -1024, 3000) + 1024) / 4024 * 2 - 1, k)
    mask = edge_padded(volumes["mask"][0].numpy(), k)
    for sample in samples:
        assert tuple(sample["mr"].shape) == mr_shape
        assert tuple(sample["ct"].shape) == ct_shape == tuple(sample["mask"].shape)
        assert float(sample["ct"].min()) >= -1.0 and float(sample["ct"].max()) <= 1.0
        # the MR patch is a window of the MR volume; CT and mask come from the same window
        if mode == "3d":
            mr_patch, centre = sample["mr"][0].numpy(), PATCH // 2
        else:  # channels are the slab's slices: back to (X, Y, k)
            mr_patch, centre = np.moveaxis(sample["mr"].numpy(), 0, -1), slab_size // 2 if mode == "2.5d" else 0
        hits = locate(mr_patch, mr)
        assert len(hits) >= 1
        x, y, z = hits[0]
        window = (slice(x, x + PATCH), slice(y, y + PATCH))
        if mode == "3d":
            ct_expected = ct_unit[window + (slice(z, z + PATCH),)]
            mask_expected = mask[window + (slice(z, z + PATCH),)]
        else:
            ct_expected, mask_expected = ct_unit[window + (z + centre,)], mask[window + (z + centre,)]
        np.testing.assert_allclose(sample["ct"][0].numpy(), ct_expected, atol=1e-5)
        np.testing.assert_array_equal(sample["mask"][0].numpy(), mask_expected)


def test_3d_mode_trains_without_augmentation_and_says_so(record, caplog):
    plain = crops(record, mode="3d", seed=4)
    with caplog.at_level("WARNING", logger="pipeline.data.loaders"):
        asked = crops(record, mode="3d", seed=4, mr_augmentation="intensity", spatial_augmentation=True)
    assert "3D mode trains without them" in caplog.text
    assert all(torch.equal(a["mr"], b["mr"]) and torch.equal(a["ct"], b["ct"]) for a, b in zip(plain, asked))


@pytest.mark.parametrize(("fraction", "inside"), [(1.0, 1.0), (0.0, 0.0)])
def test_foreground_fraction_decides_where_patches_are_centred(record, fraction, inside):
    samples = crops(record, mode="2d", count=6, foreground_fraction=fraction, seed=3)
    assert [float(s["mask"][0, PATCH // 2, PATCH // 2]) for s in samples] == [inside] * 6


def test_left_right_flip_mirrors_mr_ct_and_mask_together(record):
    volumes = validation_transforms()(dict(record))
    mr, mask = edge_padded(volumes["mr"][0].numpy(), 3), edge_padded(volumes["mask"][0].numpy(), 3)
    flipped_seen = unflipped_seen = 0
    for sample in crops(record, count=10, flip_lr=True, seed=1):
        patch = np.moveaxis(sample["mr"].numpy(), 0, -1)
        direct = locate(patch, mr)
        mirrored = locate(patch[::-1].copy(), mr)  # axis 0 is R-L after RAS orientation
        assert direct or mirrored
        if mirrored and not direct:
            flipped_seen += 1
            x, y, z = mirrored[0]
            expected_mask = mask[x:x + PATCH, y:y + PATCH, z + 1][::-1]
        else:
            unflipped_seen += 1
            x, y, z = direct[0]
            expected_mask = mask[x:x + PATCH, y:y + PATCH, z + 1]
        np.testing.assert_array_equal(sample["mask"][0].numpy(), expected_mask)
    assert flipped_seen > 0 and unflipped_seen > 0


def test_multi_plane_patches_are_slabs_along_each_plane(record):
    volumes = validation_transforms()(dict(record))
    mr, mask = volumes["mr"][0].numpy(), volumes["mask"][0].numpy()
    # the plane's in-plane axes, written out: axial (X, Y), coronal (X, Z), sagittal (Y, Z)
    views = {"axial": (mr, mask), "coronal": (mr.transpose(0, 2, 1), mask.transpose(0, 2, 1)),
             "sagittal": (mr.transpose(1, 2, 0), mask.transpose(1, 2, 0))}
    views = {plane: (edge_padded(m, 3), edge_padded(b, 3)) for plane, (m, b) in views.items()}
    seen = set()
    for sample in crops(record, count=24, planes="all", seed=2):
        patch = np.moveaxis(sample["mr"].numpy(), 0, -1)
        found = {plane: locate(patch, view_mr) for plane, (view_mr, _) in views.items()}
        plane = next(p for p, hits in found.items() if hits)
        seen.add(plane)
        x, y, z = found[plane][0]
        np.testing.assert_array_equal(sample["mask"][0].numpy(), views[plane][1][x:x + PATCH, y:y + PATCH, z + 1])
    assert seen == {"axial", "coronal", "sagittal"}
    assert planes_for_mode("3d", "all") == ("axial",) and planes_for_mode("2.5d", "all") == ("axial", "coronal", "sagittal")


def test_training_batches_without_mask_files_take_the_mask_from_the_mr(manifest):
    records = [{**r, "mask": None} for r in load_split(manifest, "train")]  # the mask comes from the MR
    sampler = training_sampler(records, mode="2.5d", patch_size=PATCH, slab_size=3, batch_size=1,
                               samples_per_volume=4, progress=False)
    batch = sampler.draw()
    assert tuple(batch["mr"].shape) == (4, 3, PATCH, PATCH)  # 1 volume x 4 samples per volume
    assert tuple(batch["ct"].shape) == (4, 1, PATCH, PATCH) == tuple(batch["mask"].shape)
    assert float(batch["mask"].max()) == 1.0
    with pytest.raises(ValueError, match="no training subjects"):
        training_sampler([], mode="2.5d", patch_size=PATCH, batch_size=1, samples_per_volume=1)


# ---------------------------------------------------------------------------------------------------- records, loaders


def test_drop_missing_removes_none_nan_and_empty_values_only():
    records = [{"subject_id": "a", "mr": "mr.nii.gz", "ct": None, "mask": float("nan"), "note": "", "n": 0},
               {"subject_id": "b", "mr": "x", "ct": "y", "mask": "z"}]
    original = [dict(r) for r in records]
    out = drop_missing(records)
    assert out == [{"subject_id": "a", "mr": "mr.nii.gz", "n": 0},
                   {"subject_id": "b", "mr": "x", "ct": "y", "mask": "z"}]
    assert len(original[0]) == len(records[0]) and math.isnan(records[0]["mask"])  # input not modified


def test_validation_loader_yields_one_whole_volume_per_batch(manifest):
    records = load_split(manifest, "train") + load_split(manifest, "val")
    loader = make_loader(records, validation_transforms(), batch_size=1, shuffle=False, cache=True)
    assert isinstance(loader.dataset, CacheDataset)
    batches = list(loader)
    assert len(batches) == 2
    assert [b["subject_id"] for b in batches] == [[r["subject_id"]] for r in records]  # no shuffle: file order
    for batch, rec in zip(batches, records):
        ct, _ = canonical(rec["ct"])
        assert tuple(batch["ct"].shape) == (1, 1, *ct.shape)
        np.testing.assert_array_equal(batch["ct"][0, 0].numpy(), ct)


def test_make_loader_sampler_replaces_shuffle(manifest):
    records = load_split(manifest, "train")
    sampler = torch.utils.data.SequentialSampler(records)
    loader = make_loader(records, validation_transforms(), batch_size=1, shuffle=True, cache=False, sampler=sampler)
    assert loader.sampler is sampler
    shuffled = make_loader(records, validation_transforms(), batch_size=1, shuffle=True, cache=False)
    assert isinstance(shuffled.sampler, torch.utils.data.RandomSampler)
    ordered = make_loader(records, validation_transforms(), batch_size=1, shuffle=False, cache=False)
    assert isinstance(ordered.sampler, torch.utils.data.SequentialSampler)


def test_a_ct_not_in_hu_is_refused_when_loaded_naming_subject_and_file(record, tmp_path):
    from pipeline.errors import find_input_error

    source = nib.load(record["ct"])
    shifted = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj) + 1024, source.affine, source.header), shifted)
    chain = validation_transforms()
    with pytest.raises(Exception) as error:  # MONAI wraps a transform's error in a RuntimeError
        chain({**record, "ct": str(shifted)})
    found = find_input_error(error.value)
    assert found is not None and str(found).startswith(f"{record['subject_id']}: ct (ct.nii.gz) values span")


def test_a_mirrored_ct_is_refused_before_training_on_it(record, tmp_path):
    from pipeline.errors import find_input_error

    source = nib.load(record["ct"])
    affine = source.affine.copy()
    affine[:, 0] *= -1  # same voxels, first axis reversed: after RAS orientation the CT would be mirrored
    mirrored = nib.Nifti1Image(np.asarray(source.dataobj), affine)
    mirrored.set_qform(affine, 1)
    mirrored.set_sform(affine, 1)
    nib.save(mirrored, tmp_path / "ct.nii.gz")
    with pytest.raises(Exception) as error:
        validation_transforms()({**record, "ct": str(tmp_path / "ct.nii.gz")})
    found = find_input_error(error.value)
    assert found is not None and "are not on the same grid" in str(found) and str(found).startswith(record["subject_id"])
