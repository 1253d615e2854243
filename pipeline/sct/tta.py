"""Flip test-time augmentation: the sCT as the mean of members, their voxel-wise HU spread as uncertainty.

Members: the MR as it is and mirrored left-right (axis X of the RAS network grid), each predicted with the
same windowed inference and the mirrored one flipped back. A head is nearly symmetric, so the mirrored MR
is a plausible input the network has not seen voxel for voxel; where the two members disagree the network
is unsure. The mean is the sCT; the standard deviation over members (population, ddof = 0, HU) is written
as ``sct_std.nii.gz`` beside it. The evaluation reports how well it ranks the true error (Spearman rho).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from transforms.intensity import unit_range_to_hu

#: Name of the uncertainty map written beside ``sct.nii.gz``.
STD_NAME = "sct_std.nii.gz"
#: Left-right axis of a ``(1, X, Y, Z)`` volume on the RAS network grid.
LEFT_RIGHT_DIM = 1


def std_path_for(sct_path: str | Path) -> Path:
    """``.../sct.nii.gz`` -> ``.../sct_std.nii.gz`` (and ``<ID>_sct.nii.gz`` -> ``<ID>_sct_std.nii.gz``)."""
    sct_path = Path(sct_path)
    name = sct_path.name
    stem, dot, suffix = name.partition(".")
    return sct_path.with_name(f"{stem}_std{dot}{suffix}")


def flip_members_hu(predict: Callable[[torch.Tensor], torch.Tensor], mr: torch.Tensor) -> torch.Tensor:
    """``(2, X, Y, Z)`` HU: ``predict(mr)`` and ``flip(predict(flip(mr)))`` for an MR ``(1, X, Y, Z)``.

    ``predict`` maps a normalised MR to the sCT in [-1, 1] (e.g. :func:`pipeline.sct.inference.predict_unit_volume`
    with its window settings bound).
    """
    plain = predict(mr)
    mirrored = torch.flip(predict(torch.flip(mr, dims=[LEFT_RIGHT_DIM])), dims=[LEFT_RIGHT_DIM])
    return torch.cat([unit_range_to_hu(plain), unit_range_to_hu(mirrored)])


def mean_and_std_hu(members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population standard deviation (HU) over the member axis, each ``(1, X, Y, Z)``."""
    return members.mean(dim=0, keepdim=True), members.std(dim=0, unbiased=False, keepdim=True)
