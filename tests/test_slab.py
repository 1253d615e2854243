"""2.5D slabs: neighbour slices as channels, inverse arrangement, patch pipeline shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, RandCropByPosNegLabeld

from transforms.slab import SlabToChannelsd, centre_slice_affine, slabs_to_volume, volume_to_slabs


def _labelled_volume(channels=1, shape=(6, 5, 7)) -> torch.Tensor:
    """Voxel value = 1000 * channel + z, so a slab's content tells which slices it holds."""
    z = torch.arange(shape[2], dtype=torch.float32)
    c = torch.arange(channels, dtype=torch.float32)[:, None, None, None] * 1000
    return (c + z).expand(channels, *shape).clone()


def test_volume_to_slabs_centres_and_replicates_edges():
    slabs = volume_to_slabs(_labelled_volume(), slab_size=3)
    assert slabs.shape == (7, 3, 6, 5)
    assert slabs[3, :, 0, 0].tolist() == [2, 3, 4]
    assert slabs[0, :, 0, 0].tolist() == [0, 0, 1]  # border slice replicated
    assert slabs[6, :, 0, 0].tolist() == [5, 6, 6]


def test_volume_to_slabs_channel_major_order_for_multichannel():
    slabs = volume_to_slabs(_labelled_volume(channels=2), slab_size=3)
    assert slabs.shape == (7, 6, 6, 5)
    assert slabs[2, :, 1, 1].tolist() == [1, 2, 3, 1001, 1002, 1003]


def test_slab_size_one_and_inverse_arrangement():
    volume = torch.randn(2, 4, 3, 5)
    assert torch.equal(slabs_to_volume(volume_to_slabs(volume, slab_size=1)), volume)
    centre = volume_to_slabs(volume[:1], slab_size=5)[:, 2:3]  # centre channel of each slab
    assert torch.equal(slabs_to_volume(centre), volume[:1])


@pytest.mark.parametrize("bad", [0, 2, 4, -1])
def test_even_or_nonpositive_slab_size_raises(bad):
    with pytest.raises(ValueError, match="odd"):
        volume_to_slabs(torch.zeros(1, 2, 2, 3), slab_size=bad)


def test_slab_to_channels_shapes_values_and_affine():
    affine = torch.diag(torch.tensor([1.0, 2.0, 3.0, 1.0]))
    affine[:3, 3] = torch.tensor([10.0, 20.0, 30.0])
    mr = MetaTensor(_labelled_volume(shape=(4, 3, 5)), affine=affine)
    ct = MetaTensor(_labelled_volume(shape=(4, 3, 5)) + 0.5, affine=affine)
    out = SlabToChannelsd("mr", centre_keys=("ct",), slab_size=5)({"mr": mr, "ct": ct})
    assert out["mr"].shape == (5, 4, 3) and out["mr"][:, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert out["ct"].shape == (1, 4, 3) and torch.all(out["ct"] == 2.5)
    expected = torch.tensor([[1.0, 0.0, 10.0], [0.0, 2.0, 20.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    for key in ("mr", "ct"):
        assert isinstance(out[key], MetaTensor)
        assert torch.allclose(out[key].affine.double(), expected)
    # slice 2 of an oblique affine: translation moves along the third column
    oblique = torch.eye(4, dtype=torch.float64)
    oblique[:3, 2] = torch.tensor([0.5, 0.0, 2.0])
    assert torch.allclose(centre_slice_affine(oblique, slice_index=2)[:2, 2], torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_slab_to_channels_rejects_wrong_depth():
    with pytest.raises(ValueError, match="slab_size=5"):
        SlabToChannelsd("mr", centre_keys="ct", slab_size=5)({"mr": torch.zeros(1, 4, 4, 3), "ct": torch.zeros(1, 4, 4, 3)})


def test_patch_pipeline_samples_inside_body_and_yields_2p5d_shapes():
    """RandCropByPosNegLabeld with the body mask as label, then SlabToChannelsd: (k,P,P) MR, (1,P,P) CT."""
    size, patch, k, samples = 32, 8, 5, 40
    ijk = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"))
    body = (np.linalg.norm(ijk - 15.5, axis=0) < 9).astype(np.float32)[None]  # ~10 % of the volume
    mr = torch.as_tensor(body * 100 + np.random.default_rng(0).random(body.shape, dtype=np.float32))
    data = {"mr": MetaTensor(mr), "ct": MetaTensor(torch.as_tensor(body * 40 - 1000)), "mask": MetaTensor(torch.as_tensor(body))}
    chain = Compose([
        RandCropByPosNegLabeld(keys=["mr", "ct", "mask"], label_key="mask", spatial_size=(patch, patch, k),
                               pos=0.9, neg=0.1, num_samples=samples),
        SlabToChannelsd("mr", centre_keys=("ct", "mask"), slab_size=k),
    ])
    chain.set_random_state(seed=0)
    patches = chain(data)
    assert len(patches) == samples
    assert all(p["mr"].shape == (k, patch, patch) for p in patches)
    assert all(p["ct"].shape == (1, patch, patch) and p["mask"].shape == (1, patch, patch) for p in patches)
    # the centre voxel of a patch is inside the body for ~pos/(pos+neg) of the samples
    centre_inside = np.mean([float(p["mask"][0, patch // 2, patch // 2]) for p in patches])
    assert centre_inside >= 0.75
    assert np.mean(body) < 0.15  # uniform sampling would have hit the body far less often
