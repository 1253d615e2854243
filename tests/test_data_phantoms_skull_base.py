"""Tests for pipeline.data.phantoms.skull_base: air cells, capsules, temporal bones, ethmoid and nose, mucosa."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.phantoms.head_tissues import HeadTissue as T
from pipeline.data.phantoms.skull_base import (air_cell_sdf, capsule_sdf, line_air_spaces, paint_ethmoid_and_nose,
                                               paint_temporal_bones)
from tests.phantom_fixtures import LOW, layout_on_grid, voxel


def test_air_cell_septa_lie_on_the_voronoi_walls_of_the_cell_centres():
    lo, hi, cell, septum = np.zeros(3), np.full(3, 12.0), 4.0, 0.8
    axes = np.meshgrid(*[np.arange(0.0, 12.0, 0.5)] * 3, indexing="ij")
    q = tuple(a.astype(np.float32) for a in axes)
    sdf = air_cell_sdf(np.random.default_rng(3), q, lo, hi, cell_mm=cell, septum_mm=septum)
    # the same centres, drawn independently: distance to the nearest wall by brute force over all centres
    n = int(np.prod(hi - lo + 2 * cell) / cell**3)
    centres = np.random.default_rng(3).uniform(lo - cell, hi + cell, size=(n, 3))
    points = np.stack([a.ravel() for a in axes], axis=1)
    d2 = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2)
    nearest = d2.argmin(axis=1)
    gap = np.linalg.norm(centres[None] - centres[nearest][:, None], axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_wall = (d2 - d2[np.arange(len(points)), nearest][:, None]) / (2 * gap)
    to_wall[np.arange(len(points)), nearest] = np.inf
    expected = septum / 2 - to_wall.min(axis=1)
    ours = sdf.ravel()
    assert np.all(ours <= expected + 1e-4)  # a wall is never missed where it is nearest...
    assert np.mean(np.abs(ours - expected) < 1e-3) > 0.99  # ...and found exactly almost everywhere
    assert 0.3 < np.mean(ours < 0) < 0.8  # cells of air, septa of bone


def test_capsule_sdf_is_the_distance_to_the_segment_minus_the_radius():
    rng = np.random.default_rng(0)
    points = rng.uniform(-20, 20, size=(500, 3)).astype(np.float32)
    a, b, radius = np.array([-5.0, 2.0, 1.0]), np.array([8.0, -3.0, 6.0]), 3.0
    sdf = capsule_sdf(tuple(points.T), a, b, radius)
    samples = a + np.linspace(0, 1, 20001)[:, None] * (b - a)
    brute = np.sqrt(((points[:, None] - samples[None]) ** 2).sum(axis=2)).min(axis=1) - radius
    np.testing.assert_allclose(sdf, brute, atol=2e-3)


@pytest.fixture(scope="module")
def temporal():
    """Four heads after paint_temporal_bones: (layout, ear, fractions before) per seed."""
    out = []
    for seed in range(4):
        rng, layout = layout_on_grid(seed)
        before = layout.canvas.fractions.copy()
        out.append((layout, paint_temporal_bones(rng, layout), before))
    return out


def test_ear_canal_is_air_from_the_middle_ear_to_the_skin_and_nothing_leaves_the_head(temporal):
    for layout, ear, before in temporal:
        f = layout.canvas.fractions
        _, j, k = voxel(layout, (0.0, ear.y, ear.z))
        line = [i for i in range(f.shape[1]) if LOW[0] + 2.0 * i > ear.x_middle + 3 and layout.depth[i, j, k] > 2.0]
        assert len(line) >= 5
        assert np.mean(f[T.SINUS_AIR, line, j, k] > 0.5) >= 0.8
        np.testing.assert_array_equal(f[T.AIR] > 0.5, before[T.AIR] > 0.5)  # the body outline is unchanged
        np.testing.assert_allclose(f.sum(axis=0), 1.0, atol=1e-5)


def test_mastoid_air_cells_never_open_into_the_brain(temporal):
    pneumatised = 0
    for layout, ear, before in temporal:
        f, q = layout.canvas.fractions, layout.q
        behind = (np.abs(q[0]) > 40) & (q[1] < ear.y - 6) & (q[2] < ear.z + 10) & (q[2] > ear.z - 35)
        pneumatised += bool((f[T.SINUS_AIR][behind] > 0.5).sum() > 10)
        assert (f[T.CORTICAL_BONE][behind] > 0.5).sum() > (before[T.CORTICAL_BONE][behind] > 0.5).sum()
        brain = T.GREY_MATTER, T.WHITE_MATTER, T.CSF
        deep = (layout.depth > layout.d_cranial + 3.0) & (q[2] > layout.z_base + layout.t_base + 3.0)
        np.testing.assert_array_equal(f[list(brain)][:, deep], before[list(brain)][:, deep])
    assert pneumatised >= 3  # about one mastoid in six is sclerotic


def test_ethmoid_cells_between_the_orbits_and_turbinates_in_the_nose():
    rng, layout = layout_on_grid(5)
    paint_ethmoid_and_nose(rng, layout)
    f, q = layout.canvas.fractions, layout.q
    ethmoid = (np.abs(q[0]) < 10) & (np.abs(q[2] - (layout.z_eye + 4)) < 8)
    ethmoid &= q[1] > layout.nasal_centre[1] - 10
    assert (f[T.SINUS_AIR][ethmoid] > 0.5).sum() > 5 and (f[T.CORTICAL_BONE][ethmoid] > 0.5).sum() > 5
    cx, cy, cz = layout.nasal_centre
    ax, ay, az = layout.nasal_semi
    nose = ((q[0] - cx) / ax) ** 2 + ((q[1] - cy) / ay) ** 2 + ((q[2] - cz) / az) ** 2 < 1
    assert (f[T.MUCOSA][nose] > 0.5).sum() > 20  # turbinates
    assert (f[T.SINUS_AIR][nose] > 0.5).sum() > (f[T.MUCOSA][nose] > 0.5).sum()  # still mostly air


def test_mucosa_lines_the_air_and_takes_only_air():
    rng, layout = layout_on_grid(6)
    paint_ethmoid_and_nose(rng, layout)
    before = layout.canvas.fractions.copy()
    line_air_spaces(rng, layout)
    f = layout.canvas.fractions
    lumen = T.SINUS_AIR, T.MUCOSA, T.CSF  # air becomes mucosa (or sinus fluid), nothing else moves
    np.testing.assert_allclose(f[list(lumen)].sum(axis=0), before[list(lumen)].sum(axis=0), atol=1e-5)
    others = [t for t in T if t not in lumen and t != T.CSF]
    np.testing.assert_array_equal(f[others], before[others])
    assert f[T.MUCOSA].sum() > before[T.MUCOSA].sum() + 50
    assert f[T.SINUS_AIR].sum() < before[T.SINUS_AIR].sum()
    # the lining sits on the walls: new mucosa is within a few mm of a voxel that was not air
    from scipy import ndimage

    new = (f[T.MUCOSA] - before[T.MUCOSA]) > 0.5
    wall_distance = ndimage.distance_transform_edt(before[T.SINUS_AIR] > 0.5, sampling=layout.spacing)
    assert np.median(wall_distance[new]) <= 4.0
