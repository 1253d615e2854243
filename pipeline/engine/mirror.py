"""Flip test-time augmentation shared by both tasks: a network's prediction of an input and of its mirror image.

Both tasks train with left-right flips (a head and a chest radiograph are nearly symmetric), so the mirrored
input is a plausible one the network has not seen pixel for pixel; its prediction, flipped back, is a second
ensemble member at the cost of one more forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["mirror_members"]


def mirror_members(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, dim: int,
                   flip: bool = True) -> list[torch.Tensor]:
    """``[predict(x)]`` and, with ``flip``, also ``flip(predict(flip(x)))``, both flips along ``dim``.

    ``predict`` must keep axis ``dim`` where it was (same shape in, same layout out along it), so the
    mirrored prediction lines up with the plain one when flipped back.
    """
    members = [predict(x)]
    if flip:
        members.append(torch.flip(predict(torch.flip(x, dims=[dim])), dims=[dim]))
    return members
