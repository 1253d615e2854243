"""2.5D slabs: neighbour slices as channels and the inverse arrangement (what inference feeds the network)."""

from __future__ import annotations

import pytest
import torch

from transforms.slab import slabs_to_volume, volume_to_slabs


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
