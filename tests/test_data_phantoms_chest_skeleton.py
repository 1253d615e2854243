"""The chest phantom's skeleton (pipeline/data/phantoms/chest_skeleton.py): rib geometry, and bone painted
where the geometry says, on an otherwise empty canvas."""

from __future__ import annotations

import numpy as np

from pipeline.data.phantoms.chest import HU
from pipeline.data.phantoms.chest_skeleton import RIB_END_DEG, make_thorax, paint_skeleton
from pipeline.data.phantoms.shapes import Canvas


def test_ribs_descend_from_back_to_front():
    """Rib geometry: each rib's anterior end lies well below its posterior end, and the painted CT holds
    bone along its centre line."""
    from pipeline.data.phantoms.chest_skeleton import RIB_END_DEG, make_thorax

    t = make_thorax(np.random.default_rng(0), s=1.0, breath=0.5, z_shift=0.0)
    for k in range(2, 9):
        drop = t.rib_height(k, np.radians(10.0)) - t.rib_height(k, np.radians(RIB_END_DEG[k]))
        assert 40.0 < drop < 110.0
    posterior, anterior = t.surface_point(1.0, np.radians(40.0), t.rib_height(4, np.radians(40.0))), \
        t.surface_point(1.0, np.radians(130.0), t.rib_height(4, np.radians(130.0)))
    assert posterior[0, 1] < t.y_c < anterior[0, 1] and anterior[0, 2] < posterior[0, 2] - 40.0


def test_skeleton_is_painted_where_the_geometry_puts_it():
    t = make_thorax(np.random.default_rng(1), s=1.0, breath=0.3, z_shift=0.0, arms="side")
    axes = [(np.arange(n) - (n - 1) / 2) * 2.5 for n in (160, 128, 144)]
    canvas = Canvas((axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]), 2.5, HU["air"])
    ribs = paint_skeleton(canvas, t, np.random.default_rng(2), HU)

    def hu_at(point):
        return canvas.hu[tuple(int(np.argmin(np.abs(a - c))) for a, c in zip(axes, point))]

    # along rib 5's centre line, back to front, on both sides: bone (cortex and marrow blend above 150 HU)
    for side in (1.0, -1.0):
        phi = np.radians(np.linspace(30.0, RIB_END_DEG[4] - 5.0, 12))
        points = t.surface_point(side, phi, t.rib_height(4, phi))
        assert np.mean([hu_at(p) > 150 for p in points]) > 0.8
    # the ribs' record covers the rib voxels and nothing near the cage centre
    assert ribs.max() == 1.0 and ribs[80, 64, 72] == 0.0
    # costal cartilage between a rib's anterior end and the sternum: below the bone threshold (100 HU)
    phi = np.radians(RIB_END_DEG[3] + 12.0)
    cartilage = t.surface_point(1.0, phi, t.rib_height(3, np.radians(RIB_END_DEG[3])) + 5.0)[0]
    assert 60.0 < hu_at(cartilage) < 160.0
    # raised arms put the glenoid and humeral head higher
    raised = make_thorax(np.random.default_rng(1), s=1.0, breath=0.3, z_shift=0.0, arms="raised")
    assert raised.humerus(1.0)[1][2] > 0 > t.humerus(1.0)[1][2] and raised.glenoid(1.0)[2] > t.glenoid(1.0)[2]
