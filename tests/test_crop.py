"""Training crops without per-voxel index arrays: centres inside/outside the body at the asked rate, 2.5D
slabs at the volume's ends built exactly as inference builds them, compact cached volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transforms.crop import CompactVolumesd, MaskBoundingBoxd, RandBodyCropd, mask_bounding_box
from transforms.slab import volume_to_slabs

SHAPE = (20, 18, 9)


def _subject():
    mr = torch.arange(np.prod(SHAPE), dtype=torch.float32).reshape(1, *SHAPE)  # every voxel unique
    mask = torch.zeros(1, *SHAPE)
    mask[0, 5:15, 4:12, :] = 1
    return {"mr": mr, "ct": mr * 2, "mask": mask}


def _cropper(**kwargs):
    options = dict(label_key="mask", spatial_size=(6, 6, 5), pos_fraction=0.75, num_samples=400, replicate_axis=2)
    cropper = RandBodyCropd(["mr", "ct", "mask"], **{**options, **kwargs})
    cropper.set_random_state(seed=0)
    return cropper


def test_bounding_box_of_the_mask():
    box = mask_bounding_box(_subject()["mask"])
    np.testing.assert_array_equal(box, [[5, 15], [4, 12], [0, 9]])
    np.testing.assert_array_equal(mask_bounding_box(torch.zeros(1, 3, 4, 5)), [[0, 3], [0, 4], [0, 5]])


def _centre_voxels(samples):
    """The source voxel of each crop's centre, recovered from the unique MR values."""
    out = []
    for s in samples:
        value = int(s["mr"][0, 3, 3, 2])
        out.append(np.unravel_index(value, SHAPE))
    return np.array(out)


def test_centres_inside_the_mask_at_the_asked_rate_and_the_crop_follows_the_centre():
    data = MaskBoundingBoxd("mask")(_subject())
    samples = _cropper()(data)
    assert len(samples) == 400
    mask = data["mask"][0].numpy() > 0
    centres = _centre_voxels(samples)
    inside = mask[tuple(centres.T)]
    assert 0.68 < inside.mean() < 0.82  # pos_fraction 0.75, 400 draws
    for s in samples[:20]:
        assert s["mr"].shape == (1, 6, 6, 5) and s["mr"].dtype == torch.float32
        torch.testing.assert_close(s["ct"], s["mr"] * 2)  # every key cropped at the same place


def test_every_slice_is_a_2p5d_centre_and_end_slabs_replicate_like_inference():
    data = MaskBoundingBoxd("mask")(_subject())
    samples = _cropper(pos_fraction=1.0)(data)
    centres = _centre_voxels(samples)
    assert set(centres[:, 2]) == set(range(SHAPE[2]))  # slices 0, 1, 7, 8 too (MONAI's crop never picks them)
    slabs = volume_to_slabs(data["mr"], slab_size=5)  # (Z, k, X, Y), what inference feeds the network
    for s, (i, j, k) in zip(samples, centres):
        if k in (0, SHAPE[2] - 1):
            expected = slabs[k][:, i - 3 : i + 3, j - 3 : j + 3].permute(1, 2, 0)
            if expected.shape[:2] == (6, 6):
                torch.testing.assert_close(s["mr"][0], expected)


def test_in_plane_windows_stay_inside_and_small_volumes_are_edge_padded():
    data = MaskBoundingBoxd("mask")(_subject())
    for s in _cropper(pos_fraction=0.0, num_samples=50)(data):  # background centres reach the borders
        values = s["mr"][0].numpy().astype(int)
        i, j, _ = np.unravel_index(values, SHAPE)
        assert len(np.unique(i)) == 6 and len(np.unique(j)) == 6  # no replicated rows in-plane
    small = MaskBoundingBoxd("mask")({k: v[:, :4, :4, :] for k, v in _subject().items()} | {"mask": torch.ones(1, 4, 4, 9)})
    (crop,) = _cropper(num_samples=1)(small)
    assert crop["mr"].shape == (1, 6, 6, 5)


def test_flips_mirror_every_key_together_at_the_asked_rate():
    data = MaskBoundingBoxd("mask")(_subject())
    for flip_prob, low, high in ((0.0, 0.0, 0.0), (0.5, 0.4, 0.6), (1.0, 1.0, 1.0)):
        samples = _cropper(flip_prob=flip_prob)(data)
        flipped = []
        for s in samples:
            source = np.unravel_index(s["mr"][0].numpy().astype(int), SHAPE)  # each voxel's origin
            steps = np.diff(source[0], axis=0)  # along the flip axis (R-L): +1 as stored, -1 mirrored
            assert np.all(steps == steps.flat[0]) and abs(steps.flat[0]) == 1
            flipped.append(steps.flat[0] == -1)
            torch.testing.assert_close(s["ct"], s["mr"] * 2)
            torch.testing.assert_close(s["mask"][0], data["mask"][0][source])
            assert s["mr"].is_contiguous() and type(s["mr"]) is torch.Tensor
        assert low <= np.mean(flipped) <= high, flip_prob
    with pytest.raises(ValueError, match="flip_prob"):
        _cropper(flip_prob=2.0)


def test_compact_volumes_are_int16_hu_and_uint8_mask():
    data = {"mr": torch.rand(1, 4, 4, 4), "ct": torch.tensor([-1000.4, 0.6, 3000.5, 20.0]).reshape(1, 4, 1, 1).expand(1, 4, 4, 4),
            "mask": torch.rand(1, 4, 4, 4)}
    out = CompactVolumesd()(data)
    assert out["ct"].dtype == torch.int16 and out["mask"].dtype == torch.uint8 and out["mr"].dtype == torch.float32
    assert out["ct"][0, :, 0, 0].tolist() == [-1000, 1, 3000, 20]  # rounded: 3000.5 -> 3000 (half to even)
    assert set(out["mask"].unique().tolist()) <= {0, 1}


def test_bad_fraction_is_rejected():
    with pytest.raises(ValueError, match="pos_fraction"):
        RandBodyCropd(["mr"], label_key="mask", spatial_size=(4, 4, 4), pos_fraction=1.5)
