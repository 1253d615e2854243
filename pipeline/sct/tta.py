"""Ensembles at inference: the sCT as the mean of members, their voxel-wise HU spread as uncertainty.

Members are one network's predictions of differently presented MRs, each mapped back to the network grid:
- planes (multi-plane 2.5D, :mod:`transforms.plane`): slabs along the axial, coronal and/or sagittal axis,
  for a model trained on those planes (the model card's ``planes``);
- flip test-time augmentation (``tta``): each plane's MR as it is and mirrored left-right (axis X of the
  RAS network grid), the mirrored prediction flipped back. A head is nearly symmetric, so the mirrored MR
  is a plausible input the network has not seen voxel for voxel.
Where members disagree the network is unsure. The mean is the sCT; with more than one member the standard
deviation over members (population, ddof = 0, HU) is written as ``sct_std.nii.gz`` beside it. The
evaluation reports how well it ranks the true error (Spearman rho).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from pipeline.engine.mirror import mirror_members
from transforms.intensity import unit_range_to_hu
from transforms.plane import from_plane, to_plane

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


def member_count(*, planes: Sequence[str], flip: bool) -> int:
    """How many predictions :func:`members_hu` makes (each costs one whole windowed inference)."""
    return len(planes) * (2 if flip else 1)


def members_hu(predict: Callable[[torch.Tensor], torch.Tensor], mr: torch.Tensor, *,
               planes: Sequence[str] = ("axial",), flip: bool = False) -> torch.Tensor:
    """``(M, X, Y, Z)`` HU for an MR ``(1, X, Y, Z)``: per plane ``from_plane(predict(to_plane(mr)))`` and,
    with ``flip``, also ``flip(from_plane(predict(to_plane(flip(mr)))))``; M = :func:`member_count`.

    ``predict`` maps a normalised MR (slabs along its last axis) to the sCT in [-1, 1] (e.g.
    :func:`pipeline.sct.inference.predict_unit_volume` with its window settings bound).
    """
    members = []
    for plane in planes:
        def predict_on_grid(volume: torch.Tensor, plane: str = plane) -> torch.Tensor:
            return from_plane(predict(to_plane(volume, plane).contiguous()), plane)

        members += [unit_range_to_hu(unit) for unit in mirror_members(predict_on_grid, mr, dim=LEFT_RIGHT_DIM,
                                                                       flip=flip)]
    return torch.cat(members)


def mean_and_std_hu(members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population standard deviation (HU) over the member axis, each ``(1, X, Y, Z)``."""
    return members.mean(dim=0, keepdim=True), members.std(dim=0, unbiased=False, keepdim=True)
