"""Tests for pipeline.engine.mirror: the mirrored member is the prediction of the flipped input, flipped back."""

from __future__ import annotations

import torch

from pipeline.engine.mirror import mirror_members


def shift_left(x: torch.Tensor) -> torch.Tensor:
    """Not mirror-symmetric: ``out[..., i] = x[..., i + 1]`` (the last column repeated)."""
    return torch.cat([x[..., 1:], x[..., -1:]], dim=-1)


def test_one_member_without_flip():
    x = torch.arange(6.0).reshape(1, 2, 3)
    members = mirror_members(shift_left, x, dim=-1, flip=False)
    assert len(members) == 1 and torch.equal(members[0], shift_left(x))


def test_mirrored_member_by_hand():
    x = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    plain, mirrored = mirror_members(shift_left, x, dim=-1)
    assert plain.tolist() == [[[1.0, 2.0, 3.0, 3.0]]]
    # flip -> [3, 2, 1, 0] -> shift -> [2, 1, 0, 0] -> flip back: the shift now goes right
    assert mirrored.tolist() == [[[0.0, 0.0, 1.0, 2.0]]]


def test_flips_only_the_named_axis():
    x = torch.rand(1, 4, 5)
    plain, mirrored = mirror_members(lambda v: v * torch.arange(4.0).reshape(1, 4, 1), x, dim=2)
    torch.testing.assert_close(plain, mirrored)  # the weight varies along axis 1, the flip is along axis 2
    plain, mirrored = mirror_members(lambda v: v * torch.arange(5.0), x, dim=2)
    torch.testing.assert_close(mirrored, x * torch.arange(5.0).flip(0))
