"""Body mask from MR: robust threshold, one component, enclosed air filled, MetaTensor handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from pipeline.data.phantoms.head import make_phantom_subject
from transforms.mask import BodyMaskd, body_mask_from_mr, fill_holes_slice_by_slice


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _assert_covers_head_within_two_voxels(mask: np.ndarray, head: np.ndarray) -> None:
    """The mask errs on the generous side (smoothing before the threshold): it must contain the head
    and stay within two voxels of it, never cut into it."""
    assert (mask & head).sum() / head.sum() > 0.995
    assert not (mask & ~ndimage.binary_dilation(head, iterations=2)).any()


def _head(shape=(32, 32, 32), *, noise=0.02, bias=0.0, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Ellipsoid 'head' (bright shell, darker brain) with a dark enclosed 'sinus', a dark bone ring,
    a bias field along x, Rician noise, and a separate bright blob outside (a marker/coil)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    r = np.sqrt(((x - 15.5) / 12) ** 2 + ((y - 15.5) / 13) ** 2 + ((z - 15.5) / 11) ** 2)
    head = r < 1.0
    signal = np.where(head, 0.7, 0.0) + np.where(r < 0.75, 0.3, 0.0)
    signal[(r > 0.75) & (r < 0.83)] = 0.03  # cortical bone: no signal, but inside the head
    sinus = ((x - 15.5) ** 2 + (y - 8) ** 2 + (z - 15.5) ** 2) < 9
    signal[sinus] = 0.0  # air cavity enclosed by tissue
    signal[2:4, 2:4, 2:4] = 1.0  # small bright blob outside the head
    signal *= np.exp(bias * (x - 15.5) / 15.5)
    noisy = np.hypot(signal + noise * rng.standard_normal(shape), noise * rng.standard_normal(shape))
    return (noisy * 731.0).astype(np.float32), head


@pytest.mark.parametrize("noise,bias", [(0.02, 0.0), (0.06, 0.0), (0.02, 0.6), (0.06, 0.6)])
def test_mask_matches_head_with_noise_and_bias(noise, bias):
    mr, head = _head(noise=noise, bias=bias)
    mask = body_mask_from_mr(mr)
    assert mask.dtype == bool and mask.shape == mr.shape
    _assert_covers_head_within_two_voxels(mask, head)
    assert not mask[2:4, 2:4, 2:4].any()  # only the largest component is kept
    assert mask[15, 8, 15] and mask[15, 15, 15]  # enclosed sinus and brain are inside


def test_phantom_head_mask_dice():
    subject = make_phantom_subject(seed=3, size="tiny")
    mask = body_mask_from_mr(subject.mr)
    # errs on the generous side by about one voxel of partial volume, never cuts the head
    assert _dice(mask, subject.mask > 0) > 0.9
    assert (mask & (subject.mask > 0)).sum() / (subject.mask > 0).sum() > 0.98


def test_air_open_to_outside_in_3d_but_enclosed_axially_is_filled():
    mr, _ = _head(noise=0.01)
    # a canal from the brain centre to the outside along z (e.g. nasal airway): open in 3-D, enclosed in axial slices
    mr[13:18, 13:18, :16] = 0.0
    mask = body_mask_from_mr(mr)
    assert mask[15, 15, 10]
    assert not body_mask_from_mr(mr, slice_axis=None, closing_iterations=0)[15, 15, 10]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_by_slice_fill_closes_a_tube_open_along_its_axis_only(axis):
    solid = np.zeros((9, 9, 9), bool)
    solid[2:7, 2:7, :] = True
    tube = solid.copy()
    tube[4, 4, :] = False  # a one-voxel channel through the whole volume along z: no 3-D hole
    tube, solid = np.moveaxis(tube, 2, axis), np.moveaxis(solid, 2, axis)
    np.testing.assert_array_equal(fill_holes_slice_by_slice(tube, axis), solid)  # enclosed in every slice
    other = fill_holes_slice_by_slice(tube, (axis + 1) % 3)  # slices along the channel: nothing enclosed
    np.testing.assert_array_equal(other, tube)


def test_scale_invariance_channel_dim_and_explicit_threshold():
    mr, _ = _head()
    base = body_mask_from_mr(mr)
    np.testing.assert_array_equal(body_mask_from_mr(mr * 1e-3), base)
    with_channel = body_mask_from_mr(torch.as_tensor(mr)[None])
    assert with_channel.shape == (1, *mr.shape)
    np.testing.assert_array_equal(with_channel[0], base)
    assert body_mask_from_mr(mr, threshold=float(mr.max()) * 2 / 3).sum() < base.sum()


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 8)), np.full((8, 8, 8), np.nan), np.ones((2, 8, 8, 8)), np.ones((8, 8))])
def test_bad_input_raises(bad):
    with pytest.raises(ValueError, match="body mask"):
        body_mask_from_mr(bad)


def test_body_maskd_creates_keeps_and_overwrites():
    mr_array, head = _head()
    affine = torch.diag(torch.tensor([-1.0, -1.0, 2.0, 1.0]))
    mr = MetaTensor(torch.as_tensor(mr_array)[None], affine=affine, meta={"filename_or_obj": "mr.nii.gz"})
    mr.push_applied_operation({"class": "Orientationd", "id": 1})
    out = BodyMaskd("mr", mask_key="mask")({"mr": mr, "mask": None})
    mask = out["mask"]
    assert isinstance(mask, MetaTensor) and mask.shape == mr.shape and mask.dtype == torch.float32
    assert set(torch.unique(mask).tolist()) == {0.0, 1.0}
    assert torch.equal(mask.affine, mr.affine) and len(mask.applied_operations) == 1
    _assert_covers_head_within_two_voxels(mask[0].numpy() > 0, head)
    mask.applied_operations.append("x")
    assert len(mr.applied_operations) == 1  # a copy, not shared with the MR

    given = MetaTensor(torch.zeros_like(mr))
    assert BodyMaskd("mr")({"mr": mr, "mask": given})["mask"] is given
    assert BodyMaskd("mr", overwrite=True)({"mr": mr, "mask": given})["mask"].sum() > 0
    assert "mask" in BodyMaskd("mr")({"mr": mr})
