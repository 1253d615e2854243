"""Tests for pipeline.data.phantoms.jaw_neck: neck without a skull shell, airway, teeth, jaw, spine."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.data.phantoms.head_tissues import HeadTissue as T
from pipeline.data.phantoms.jaw_neck import paint_jaw_and_neck
from pipeline.data.phantoms.skull_base import paint_temporal_bones
from tests.phantom_fixtures import layout_on_grid, voxel


@pytest.fixture(scope="module", params=[0, 1])
def head(request):
    rng, layout = layout_on_grid(request.param, spacing_mm=1.5)
    ear = paint_temporal_bones(rng, layout)
    paint_jaw_and_neck(rng, layout, ear)
    return layout


def _landmarks(layout):
    cx, cy, cz = layout.nasal_centre
    return cz - layout.nasal_semi[2], cy - layout.nasal_semi[1]  # nasal floor (palate), back of the nose


def test_the_neck_has_no_skull_shell_only_muscle_under_the_fat(head):
    f, q = head.canvas.fractions, head.q
    neck = (np.abs(q[0]) > 45) & (q[1] < -25) & (q[2] < head.z_base_post - 15) & (head.depth > head.d_outer + 1)
    assert neck.sum() > 100
    assert (f[T.CORTICAL_BONE][neck] > 0.5).sum() == 0
    assert np.mean(f[T.MUSCLE][neck] > 0.5) > 0.9


def test_teeth_sit_in_the_jaws_below_the_nose_in_front_of_the_spine(head):
    f, q = head.canvas.fractions, head.q
    z_palate, _ = _landmarks(head)
    enamel, dentine = f[T.ENAMEL] > 0.5, f[T.DENTINE] > 0.5
    assert enamel.sum() > 100 and dentine.sum() > 100
    assert q[2][enamel].max() < z_palate and q[1][enamel].min() > head.y_post + 20
    # enamel caps dentine: almost every enamel voxel touches dentine within a few mm
    near = ndimage.binary_dilation(dentine, iterations=3)
    assert np.mean(near[enamel]) > 0.9
    # teeth are not all one blob: several separate crowns per jaw
    _, n_crowns = ndimage.label(enamel)
    assert n_crowns >= 8


def test_airway_runs_from_the_nose_down_in_front_of_the_spine(head):
    f, q = head.canvas.fractions, head.q
    z_palate, y_choana = _landmarks(head)
    air = f[T.SINUS_AIR] > 0.5
    labels, _ = ndimage.label(air)
    nose = labels[voxel(head, (3.0, head.nasal_centre[1], head.nasal_centre[2]))]  # beside the septum
    assert nose > 0
    airway = labels == nose
    assert q[2][airway].min() < z_palate - 20  # the oropharynx below the palate is the same air space
    marrow = (f[T.MARROW] > 0.5) & (np.abs(q[0]) < 12) & (q[2] < z_palate - 10)
    low_air = airway & (q[2] < z_palate - 10)
    assert q[1][marrow].mean() < q[1][low_air].mean()  # vertebral bodies behind the pharynx


def test_spinal_canal_holds_csf_and_cord_down_to_the_edge_of_the_field(head):
    f, q = head.canvas.fractions, head.q
    bottom = q[2] < q[2].min() + 6
    cord = (f[T.WHITE_MATTER] > 0.5) & bottom
    csf = (f[T.CSF] > 0.5) & bottom
    assert cord.sum() > 5 and csf.sum() > 5
    assert np.all(np.abs(q[0][cord]) < 8)
    canal = cord | csf
    assert np.abs(q[1][cord].mean() - q[1][canal].mean()) < 2.5  # the cord lies in its canal
    assert np.abs(q[0][canal].mean()) < 1.5
    np.testing.assert_allclose(f.sum(axis=0), 1.0, atol=1e-5)
