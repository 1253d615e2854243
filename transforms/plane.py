"""Multi-plane 2.5D: slabs along the axial, coronal or sagittal axis of the RAS network grid.

A 2.5D network sees a slab of neighbouring slices along the last spatial axis (:mod:`transforms.slab`).
Putting another anatomical axis last (a permutation of the spatial axes, no resampling) lets the same code
train on and predict coronal and sagittal slabs. Predictions along the three planes make errors of
different shapes (an axial model's slice-to-slice stripes run across a sagittal view, a sagittal model's
along it), so their mean is smoother and their spread is an uncertainty map (:mod:`pipeline.sct.tta`).

Volumes are ``(C, X, Y, Z)`` with X = right-left, Y = anterior-posterior, Z = inferior-superior (RAS).
Voxels are assumed near-isotropic: a coronal slab of 1 x 1 x 3 mm voxels is not what an axial slab of
the same voxels looks like (resample with ``target_spacing`` for such data).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Plane -> order of the spatial axes (X, Y, Z) = (0, 1, 2) that puts the plane's normal last.
PLANE_AXES: dict[str, tuple[int, int, int]] = {
    "axial": (0, 1, 2),  # slices across Z (inferior-superior): in-plane X, Y
    "coronal": (0, 2, 1),  # slices across Y (anterior-posterior): in-plane X, Z
    "sagittal": (1, 2, 0),  # slices across X (right-left): in-plane Y, Z
}
PLANES = tuple(PLANE_AXES)


def check_planes(planes: Sequence[str] | str) -> tuple[str, ...]:
    """``planes`` as a tuple of known plane names (a single name or ``"all"`` is accepted)."""
    if isinstance(planes, str):
        planes = PLANES if planes == "all" else (planes,)
    planes = tuple(str(p) for p in planes)
    unknown = [p for p in planes if p not in PLANE_AXES]
    if unknown or not planes or len(set(planes)) != len(planes):
        raise ValueError(f"planes must be distinct names from {PLANES} (or 'all'), got {list(planes)}")
    return planes


def to_plane(volume: torch.Tensor, plane: str) -> torch.Tensor:
    """``(C, X, Y, Z)`` -> the same voxels with ``plane``'s normal as the last axis (a view, no copy)."""
    order = PLANE_AXES[plane]
    return volume.permute(0, *(1 + a for a in order))


def from_plane(volume: torch.Tensor, plane: str) -> torch.Tensor:
    """Inverse of :func:`to_plane`: back to ``(C, X, Y, Z)``."""
    inverse = np.argsort(PLANE_AXES[plane])
    return volume.permute(0, *(1 + int(a) for a in inverse))
