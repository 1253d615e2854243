"""A detailed-head layout on a frame-aligned grid (no pose, no warp), for the tests of the structures painted
on top of ``paint_head`` (tests/test_data_phantoms_skull_base.py, tests/test_data_phantoms_jaw_neck.py)."""

from __future__ import annotations

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
