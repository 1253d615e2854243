"""Input validation: array sanity and whole-subject checks, with errors that name the subject.

Every problem is an :class:`InputError` whose message starts with the subject ID (when known), names the
file (or role) and says what is wrong, e.g.
``"1BA001: mr.nii.gz is 4-D (256, 256, 180, 2); expected a 3-D volume"``.

Header-level checks (:func:`pipeline.io.geometry.read_geometry`, :func:`~pipeline.io.geometry.check_same_grid`) never load voxels, so a whole
dataset is checked in seconds; array checks (:func:`check_volume_array`, :func:`check_mask_array`) run on
data already loaded. :func:`validate_subject` collects all problems of one subject as strings instead of
raising, so a manifest check can report every subject at once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError, subject_prefix
from pipeline.io.geometry import Geometry, check_orientation, check_same_grid, read_geometry
from pipeline.io.volumes import read_volume

__all__ = [
    "CT_AIR_CEILING_HU",
    "check_ct_hu",
    "check_mask_array",
    "check_volume_array",
    "path_given",
    "validate_subject",
]


def _as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor / MetaTensor, without importing torch here
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check_3d(array: np.ndarray, what: str, subject_id: str | None) -> None:
    if array.ndim != 3:
        hint = ""
        if array.ndim == 4 and 1 in array.shape:
            hint = " (has a singleton axis: drop the channel/time axis before this check)"
        raise InputError(f"{subject_prefix(subject_id)}{what} is {array.ndim}-D {tuple(array.shape)}; expected a 3-D volume{hint}")
    if array.size == 0:
        raise InputError(f"{subject_prefix(subject_id)}{what} is empty (shape {tuple(array.shape)})")


def check_volume_array(array: Any, *, subject_id: str | None, role: str, source: str | os.PathLike | None = None) -> None:
    """Raise :class:`InputError` unless ``array`` is a usable 3-D image ``(X, Y, Z)``.

    Checks, in order: exactly 3 dimensions (a singleton 4th axis is *not* accepted silently), not
    empty, no NaN/Inf (the count is reported), not constant.

    Args:
        array: numpy array or torch tensor, any dtype (e.g. MR arbitrary units, CT HU).
        role: what the image is (``"mr"``, ``"ct"``); used in the message.
        source: file it came from, named in the message when given.
    """
    what = f"{role} ({Path(source).name})" if source is not None else role
    array = _as_numpy(array)
    _check_3d(array, what, subject_id)
    if np.issubdtype(array.dtype, np.inexact):
        finite = np.isfinite(array)
        if not finite.all():
            n_nan = int(np.isnan(array).sum())
            n_inf = int(array.size - finite.sum()) - n_nan
            raise InputError(f"{subject_prefix(subject_id)}{what} contains non-finite values: {n_nan} NaN and "
                             f"{n_inf} Inf of {array.size} voxels")
    lo, hi = array.min(), array.max()
    if lo == hi:
        raise InputError(f"{subject_prefix(subject_id)}{what} is constant (every voxel = {lo:g}): an empty or blank image")


def check_mask_array(mask: Any, *, subject_id: str | None, source: str | os.PathLike | None = None) -> None:
    """Raise :class:`InputError` unless ``mask`` is 3-D ``(X, Y, Z)`` with at least one voxel > 0."""
    what = f"mask ({Path(source).name})" if source is not None else "mask"
    mask = _as_numpy(mask)
    _check_3d(mask, what, subject_id)
    if not np.any(mask > 0):
        raise InputError(f"{subject_prefix(subject_id)}{what} is empty: no voxel > 0")


#: A head CT holds air (about -1000 HU) around the patient; a minimum above this means no air at all.
CT_AIR_CEILING_HU = -500.0


def check_ct_hu(ct: Any, *, subject_id: str | None, source: str | os.PathLike | None = None) -> None:
    """Raise :class:`InputError` when a CT cannot be in HU: no voxel below :data:`CT_AIR_CEILING_HU` (no
    air; typically stored without the -1024 offset, values 0...4095) or values beyond [-2048, 32767]."""
    what = f"ct ({Path(source).name})" if source is not None else "ct"
    array = _as_numpy(ct)
    lo, hi = float(array.min()), float(array.max())
    if lo > CT_AIR_CEILING_HU:
        raise InputError(f"{subject_prefix(subject_id)}{what} values span [{lo:g}, {hi:g}]: no air below "
                         f"{CT_AIR_CEILING_HU:g} HU, so it is not in HU (stored without the -1024 offset? add "
                         "RescaleIntercept -1024 / subtract 1024)")
    if lo < -2048 - 0.5:
        raise InputError(f"{subject_prefix(subject_id)}{what} minimum {lo:g} is below -2048: not HU")


def path_given(value: Any) -> bool:
    """A path was given (pandas uses NaN/None/"" for an empty cell)."""
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return str(value).strip() != ""


def validate_subject(subject: Mapping[str, Any], *, read_data: bool = False) -> list[str]:
    """All problems of one subject, as messages (empty list when fine). Never raises for bad data.

    ``subject`` has ``subject_id``, ``mr`` (required) and optionally ``ct`` and ``mask`` (paths; None,
    NaN or "" mean absent). Header checks: each file present, readable, 3-D, with an orientation;
    ct and mask on the MR grid. With ``read_data=True`` the voxels are loaded as well (slower):
    truncated data, NaN/Inf, constant images and empty masks are found.
    """
    subject_id = str(subject.get("subject_id") or "") or None
    problems: list[str] = []
    geometries: dict[str, Geometry] = {}
    for role in ("mr", "ct", "mask"):
        if not path_given(subject.get(role)):
            if role == "mr":
                problems.append(f"{subject_prefix(subject_id)}no mr file given")
            continue
        try:
            geometry = read_geometry(subject[role], subject_id=subject_id)
        except InputError as e:
            problems.append(str(e))
            continue
        if geometry.ndim != 3:
            problems.append(f"{subject_prefix(subject_id)}{geometry.name} is {geometry.ndim}-D {tuple(geometry.shape)}; "
                            "expected a 3-D volume")
            continue
        try:
            check_orientation(geometry, subject_id=subject_id)
        except InputError as e:
            problems.append(str(e))
        geometries[role] = geometry
    for other in ("ct", "mask"):
        if "mr" in geometries and other in geometries:
            try:
                check_same_grid(geometries["mr"], geometries[other], subject_id=subject_id, names=("mr", other))
            except InputError as e:
                problems.append(str(e))
    if read_data:
        for role, geometry in geometries.items():
            try:
                array, _ = read_volume(geometry.path)
            except Exception as e:  # truncated gzip, missing .raw of an .mhd, ...
                reason = " ".join(str(e).split()) or type(e).__name__
                problems.append(f"{subject_prefix(subject_id)}{geometry.name} unreadable: {reason} ({geometry.path})")
                continue
            try:
                if role == "mask":
                    check_mask_array(array, subject_id=subject_id, source=geometry.path)
                else:
                    check_volume_array(array, subject_id=subject_id, role=role, source=geometry.path)
                if role == "ct":
                    check_ct_hu(array, subject_id=subject_id, source=geometry.path)
            except InputError as e:
                problems.append(str(e))
    return problems
