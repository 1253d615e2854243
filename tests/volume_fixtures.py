"""Small NIfTI files on oblique grids, shared by the geometry and input-check tests."""

from __future__ import annotations

import nibabel as nib
import numpy as np

SHAPE = (8, 8, 6)


def oblique_affine(spacing=(1.0, 1.5, 2.0), origin=(-10.0, 20.0, 5.0), angle_deg=15.0) -> np.ndarray:
    """Voxel -> RAS mm with a rotation about z and a flipped x axis (an LAS-like, non-trivial grid)."""
    a = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ np.diag([-1, 1, 1])
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


def save_nifti(path, data=None, affine=None, *, shape=SHAPE, dtype=np.float32):
    data = np.random.default_rng(0).normal(100, 10, shape).astype(dtype) if data is None else data
    img = nib.Nifti1Image(data, oblique_affine() if affine is None else affine)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, path)
    return path
