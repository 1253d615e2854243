"""Signed distances and the painting canvas (pipeline/data/phantoms/shapes.py), checked against closed forms."""

from __future__ import annotations

import numpy as np

from pipeline.data.phantoms.shapes import Canvas, capsule_sdf, ellipse_sdf, ellipsoid_sdf, rotation


def _grid(n=41, step=1.0):
    a = (np.arange(n) - (n - 1) / 2) * step
    return Canvas((a[:, None, None], a[None, :, None], a[None, None, :]), step, -1000.0)


def test_distances_match_closed_forms():
    # circle of radius 5: exact distance |r| - 5; capsule: distance to a segment minus the radius
    u = np.array([0.0, 3.0, 8.0, 0.0])
    v = np.array([0.0, 4.0, 0.0, 5.0])
    assert np.allclose(ellipse_sdf(u, v, 5.0, 5.0), np.hypot(u, v) - 5.0, atol=1e-6)
    xs, ys, zs = np.array([5.0, 3.0, 12.0]), np.array([4.0, 1.0, 0.0]), np.array([3.0, 0.0, 0.0])
    d = capsule_sdf(xs, ys, zs, (0, 0, 0), (10, 0, 0), 2.0)
    assert np.allclose(d, [np.hypot(4, 3) - 2, 1 - 2, 2 - 2])
    # z_scale 0.5: the capsule reaches twice as far along z
    assert abs(float(capsule_sdf(0.0, 0.0, 4.0, (0, 0, 0), (10, 0, 0), 2.0, z_scale=0.5))) < 1e-9
    # a rotated ellipsoid: the long axis turned from x to y by a 90 deg yaw
    axes = rotation(90.0)
    assert ellipsoid_sdf(0.0, 9.0, 0.0, (0, 0, 0), (10.0, 2.0, 2.0), axes) < 0 < ellipsoid_sdf(9.0, 0.0, 0.0, (0, 0, 0),
                                                                                            (10.0, 2.0, 2.0), axes)


def test_union_region_equals_the_full_grid_minimum_near_the_shapes():
    canvas = _grid()
    x, y, z = canvas.q
    segments = [(np.array([-10.0, 0, 0]), np.array([5.0, 3.0, 0]), 3.0),
                (np.array([5.0, 3.0, 0]), np.array([8.0, -9, 6]), 2.0)]
    slices, sdf = canvas.union_of_capsules(segments)
    full = np.minimum(*(capsule_sdf(x, y, z, a, b, r) for a, b, r in segments))
    near = full[slices] < 1.0
    assert near.any() and np.allclose(sdf[near], full[slices][near], atol=1e-5)


def test_painting_blends_partial_volume_and_claims():
    canvas = _grid(step=2.0)
    canvas.start_claiming()
    canvas.paint_in_box((-10, -10, -10), (10, 10, 10), lambda x, y, z: np.sqrt(x * x + y * y + z * z) - 6.0, 40.0)
    inside, edge = canvas.hu[20, 20, 20], canvas.hu[20, 20, 23]  # centre; 6 mm out = on the surface
    assert inside == 40.0 and -1000.0 < edge < 40.0 and np.isclose(edge, -480.0)  # half occupied
    assert canvas.claimed[20, 20, 20] == 1.0 and canvas.claimed[0, 0, 0] == 0.0
    # the volume painted is the sphere's (4/3 pi 6^3 mm^3) within a voxel's rounding
    occupied = ((canvas.hu + 1000.0) / 1040.0).sum() * 8.0
    assert abs(occupied - 4 / 3 * np.pi * 216) < 0.05 * 4 / 3 * np.pi * 216
