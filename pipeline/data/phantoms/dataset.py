"""What every phantom family shares: the grid a size names, rotations, and writing N subjects as folders.

A size is a preset name (``SIZES[name] = (shape, spacing mm)``) or a voxel count ``(X, Y, Z)`` that
keeps the family's field of view. Subject ``i`` of a dataset gets a seed derived from ``(seed, i)``, so
it is the same subject whatever ``n`` (and whatever ``first_id`` numbers its ID), and the same whether the
subjects are made one after the other or by several worker processes (:func:`write_subjects`); existing subject
folders are refused before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline.data.parallel import map_in_processes

__all__ = ["phantom_grid", "rotation_matrix", "subject_folders", "write_subjects"]


def phantom_grid(size: str | Sequence[int], *, sizes: Mapping[str, tuple[tuple[int, int, int], tuple[float, ...]]],
                 fov_mm: np.ndarray, min_voxels: int, what: str = "phantom") -> tuple[tuple[int, int, int], np.ndarray]:
    """``(shape, spacing mm)`` of ``size``: a preset of ``sizes``, or a shape whose spacing keeps ``fov_mm``."""
    if isinstance(size, str):
        if size not in sizes:
            raise ValueError(f"unknown {what} size {size!r}; choose one of {sorted(sizes)} or a shape (X, Y, Z)")
        shape, spacing = sizes[size]
        return tuple(shape), np.asarray(spacing, dtype=float)
    shape = tuple(int(n) for n in size)
    if len(shape) != 3 or min(shape) < min_voxels:
        raise ValueError(f"{what} size must be 3 voxel counts >= {min_voxels}, got {size!r}")
    return shape, np.asarray(fov_mm, dtype=float) / np.asarray(shape)  # keep the FOV: the anatomy must fit


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation matrix R = Rz @ Ry @ Rx for angles (degrees) about x, y, z."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def subject_folders(out_dir: str | os.PathLike, *, n: int, seed: int, subject_id: Callable[[int], str],
                    overwrite: bool, progress: bool, desc: str, first_id: int = 1) -> Iterator[tuple[Path, int]]:
    """``(folder, subject seed)`` for the ``n`` subjects of a dataset in ``out_dir``; folders are created.

    ``subject_id(k)`` names the subject numbered ``k + 1``; the ``i``-th subject is numbered ``first_id + i``
    (e.g. 901, 902, ... for a held-out set whose IDs must not meet a training set's) and its seed is the
    ``i``-th of ``seed``'s, whatever ``first_id``. Raises ``FileExistsError`` naming the first existing
    folder before anything is written, unless ``overwrite`` (then each file in a folder is replaced)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if first_id < 1:
        raise ValueError(f"first_id must be >= 1, got {first_id}")
    folders = [Path(out_dir) / subject_id(first_id - 1 + i) for i in range(n)]
    existing = [f for f in folders if f.exists()]
    if existing and not overwrite:
        names = ", ".join(f.name for f in existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise FileExistsError(f"{existing[0].name}: subject folder {existing[0]} already exists ({len(existing)} "
                              f"existing: {names}); refusing to overwrite (pass overwrite=True / --overwrite to replace)")
    children = np.random.SeedSequence(seed).spawn(n)
    indices = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=desc, unit="subject")
    for i in indices:
        folders[i].mkdir(parents=True, exist_ok=True)
        yield folders[i], int(children[i].generate_state(1)[0])


def write_subjects(out_dir: str | os.PathLike, *, n: int, seed: int, subject_id: Callable[[int], str],
                   write_subject: Callable[[Path, int], object], overwrite: bool, progress: bool, desc: str,
                   first_id: int = 1, workers: int = 1) -> list[Path]:
    """Write the ``n`` subjects of a dataset: ``write_subject(folder, subject seed)`` for each of
    :func:`subject_folders` (same arguments); returns the folders in subject order.

    ``workers`` > 1 makes that many subjects at a time, each in a process of its own
    (:func:`pipeline.data.parallel.map_in_processes`; ``write_subject`` must then pickle): the subjects' seeds are
    fixed before any is made, so the files are the same whatever ``workers``. A subject that fails raises
    here, after the subjects already running have finished."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    folders = list(subject_folders(out_dir, n=n, seed=seed, subject_id=subject_id, overwrite=overwrite,
                                   progress=False, desc=desc, first_id=first_id))
    map_in_processes(write_subject, folders, workers=workers, progress=progress, desc=desc, unit="subject")
    return [folder for folder, _ in folders]
