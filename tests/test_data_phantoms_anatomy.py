"""Tests for pipeline.data.phantoms.anatomy: the tissue property table (HU and MR properties against
the documented/literature values), ``smooth_noise`` (seeded, zero mean / unit SD, correlation length in
mm on anisotropic grids, compared with the Gaussian-kernel theory) and ``paint_head`` (tissue fractions
summing to 1, head outline, layer order from brain to skin, eyes, modulation fields).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.data.phantoms.anatomy import N_TISSUES, TISSUES, Tissue, TissueProperties, paint_head, smooth_noise

HEAD_SEMI = (78.0, 89.0, 93.0, 127.0)  # left-right, antero-posterior, upper and lower supero-inferior (mm)
SPACING = np.array([5.0, 5.0, 5.0])
SHAPE = (44, 44, 40)  # 220 x 220 x 200 mm around the head centre


def frame_grid(shape=SHAPE, spacing=SPACING) -> tuple[np.ndarray, ...]:
    """Frame coordinates (mm) of every voxel, origin at the grid centre, no rotation or deformation."""
    ijk = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return tuple(((ijk[a] - (shape[a] - 1) / 2) * spacing[a] + np.zeros(shape)).astype(np.float32) for a in range(3))


@pytest.fixture(scope="module")
def head():
    q = frame_grid()
    fractions, fields = paint_head(np.random.default_rng(0), q, SPACING, HEAD_SEMI)
    return q, fractions, fields


# ---------------------------------------------------------------------------------------------------- tissue table


def test_tissue_labels_and_table_cover_each_other():
    assert [t.value for t in Tissue] == list(range(N_TISSUES)) and N_TISSUES == 10
    assert set(TISSUES) == set(Tissue)
    assert all(isinstance(p, TissueProperties) for p in TISSUES.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        TISSUES[Tissue.FAT].hu = 0.0  # the documented table cannot be changed by accident


def test_nominal_hu_lies_in_its_range_and_within_stored_ct_values():
    for tissue, props in TISSUES.items():
        lo, hi = props.hu_range
        assert lo <= props.hu <= hi, tissue.name
        assert -1024.0 <= lo and hi <= 3071.0, tissue.name  # the int16 CT window the phantoms store


def test_hu_values_match_the_documented_tissue_classes():
    hu = {t: TISSUES[t].hu for t in Tissue}
    assert hu[Tissue.AIR] == hu[Tissue.SINUS_AIR] == -1000.0
    assert -150.0 <= hu[Tissue.FAT] <= -50.0
    for water_like in (Tissue.CSF, Tissue.VITREOUS):
        assert 0.0 <= hu[water_like] <= 20.0, water_like.name
    assert 20.0 <= hu[Tissue.WHITE_MATTER] < hu[Tissue.GREY_MATTER] <= 50.0  # GM denser than WM on CT
    assert 20.0 <= hu[Tissue.SOFT_TISSUE] <= 80.0
    assert hu[Tissue.SOFT_TISSUE] < hu[Tissue.DIPLOE] < hu[Tissue.CORTICAL_BONE]
    assert TISSUES[Tissue.CORTICAL_BONE].hu_range[0] >= 1000.0
    # constant tissues have a degenerate range; bone density and brain texture vary
    for tissue in (Tissue.AIR, Tissue.SOFT_TISSUE, Tissue.FAT, Tissue.CSF, Tissue.VITREOUS, Tissue.SINUS_AIR):
        assert TISSUES[tissue].hu_range == (TISSUES[tissue].hu, TISSUES[tissue].hu), tissue.name
    for tissue in (Tissue.CORTICAL_BONE, Tissue.DIPLOE, Tissue.GREY_MATTER, Tissue.WHITE_MATTER):
        lo, hi = TISSUES[tissue].hu_range
        assert lo < hi, tissue.name


def test_mr_properties_make_air_and_bone_dark_and_order_t1():
    for dark in (Tissue.AIR, Tissue.SINUS_AIR, Tissue.CORTICAL_BONE):
        assert TISSUES[dark].proton_density <= 0.05, dark.name
    assert TISSUES[Tissue.CSF].proton_density == 1.0  # relative to water
    assert all(0.0 <= p.proton_density <= 1.0 and p.t1_ms > 0 and p.t2star_ms > 0 for p in TISSUES.values())
    t1 = {t: TISSUES[t].t1_ms for t in Tissue}
    # 1.5 T ordering: fat shortest, then white matter, grey matter, CSF longest
    assert t1[Tissue.FAT] < t1[Tissue.WHITE_MATTER] < t1[Tissue.GREY_MATTER] < t1[Tissue.CSF]


# ---------------------------------------------------------------------------------------------------- smooth_noise


def test_smooth_noise_is_seeded_float32_zero_mean_unit_sd():
    spacing = np.array([1.5, 2.0, 3.0])
    a = smooth_noise(np.random.default_rng(11), (20, 16, 12), spacing, 10.0)
    b = smooth_noise(np.random.default_rng(11), (20, 16, 12), spacing, 10.0)
    c = smooth_noise(np.random.default_rng(12), (20, 16, 12), spacing, 10.0)
    assert a.shape == (20, 16, 12) and a.dtype == np.float32
    assert a.tobytes() == b.tobytes()
    assert not np.allclose(a, c)
    assert abs(float(a.mean())) < 1e-5 and float(a.std()) == pytest.approx(1.0, abs=1e-5)


def _lag_correlation(field: np.ndarray, axis: int, lag: int) -> float:
    moved = np.moveaxis(field, axis, 0)
    return float(np.corrcoef(moved[:-lag].ravel(), moved[lag:].ravel())[0, 1])


def test_smooth_noise_correlation_length_is_in_mm_on_an_anisotropic_grid():
    """White noise blended by Gaussian weights of SD s has correlation exp(-d^2 / (4 s^2)) at distance d;
    the same distance in mm spans 8, 4 and 2 voxels along the three axes and must give the same value."""
    spacing, scale = np.array([1.0, 2.0, 4.0]), 8.0
    fields = [smooth_noise(np.random.default_rng(seed), (96, 48, 24), spacing, scale) for seed in range(20)]
    for distance in (4.0, 8.0, 16.0):
        theory = np.exp(-(distance**2) / (4 * scale**2))
        for axis in range(3):
            lag = int(distance / spacing[axis])
            measured = np.mean([_lag_correlation(f, axis, lag) for f in fields])
            assert measured == pytest.approx(theory, abs=0.05), (distance, axis)
    for axis in range(3):  # three correlation lengths apart: nearly independent
        assert np.mean([_lag_correlation(f, axis, int(24.0 / spacing[axis])) for f in fields]) < 0.2


def test_smaller_scale_decorrelates_faster():
    spacing = np.array([2.0, 2.0, 2.0])
    coarse = smooth_noise(np.random.default_rng(0), (40, 40, 20), spacing, 20.0)
    fine = smooth_noise(np.random.default_rng(0), (40, 40, 20), spacing, 4.0)
    assert _lag_correlation(coarse, 0, 4) > 0.9  # 8 mm apart at a 20 mm scale
    assert _lag_correlation(fine, 0, 4) < 0.5  # 8 mm apart at a 4 mm scale


# ---------------------------------------------------------------------------------------------------- paint_head


def test_fractions_are_a_partition_of_each_voxel(head):
    _, fractions, _ = head
    assert fractions.shape == (N_TISSUES, *SHAPE) and fractions.dtype == np.float32
    assert float(fractions.min()) >= 0.0 and float(fractions.max()) <= 1.0
    np.testing.assert_allclose(fractions.sum(axis=0), 1.0, atol=1e-5)
    mixed = (fractions.max(axis=0) < 0.99).mean()
    assert 0.0 < mixed < 0.5  # partial volume at boundaries only


def test_paint_head_is_deterministic_for_a_seed():
    q = frame_grid((20, 20, 18), np.array([11.0, 11.0, 11.0]))
    spacing = np.array([11.0, 11.0, 11.0])
    a, fa = paint_head(np.random.default_rng(4), q, spacing, HEAD_SEMI)
    b, fb = paint_head(np.random.default_rng(4), q, spacing, HEAD_SEMI)
    c, _ = paint_head(np.random.default_rng(5), q, spacing, HEAD_SEMI)
    assert a.tobytes() == b.tobytes() and all(fa[k].tobytes() == fb[k].tobytes() for k in fa)
    assert not np.array_equal(a, c)


def test_head_fills_the_ellipsoid_and_nothing_outside(head):
    q, fractions, _ = head
    qx, qy, qz = q
    semi_z = np.where(qz > 0, HEAD_SEMI[2], HEAD_SEMI[3])
    r = np.sqrt((qx / HEAD_SEMI[0]) ** 2 + (qy / HEAD_SEMI[1]) ** 2 + (qz / semi_z) ** 2)
    outside_air = fractions[Tissue.AIR]
    assert np.all(outside_air[r > 1.1] == 1.0)  # well outside the skin: pure air
    assert np.all(outside_air[r < 0.9] == 0.0)  # well inside: no outside air (sinus air is its own tissue)
    head_volume = float((1.0 - outside_air).sum())
    assert head_volume == pytest.approx(float((r < 1.0).sum()), rel=0.05)


def test_layers_from_brain_to_skin_along_the_vertex(head):
    _, fractions, _ = head
    i, j, k0 = SHAPE[0] // 2, SHAPE[1] // 2, SHAPE[2] // 2
    labels = fractions.argmax(axis=0)[i, j, k0:]
    brain = {Tissue.GREY_MATTER, Tissue.WHITE_MATTER, Tissue.CSF}
    assert labels[0] in brain  # the head centre is brain
    last_brain = max(n for n, t in enumerate(labels) if t in brain)
    first_air = min(n for n, t in enumerate(labels) if t == Tissue.AIR)
    assert last_brain < first_air
    ray = fractions[:, i, j, k0:]
    bone = ray[Tissue.CORTICAL_BONE] + ray[Tissue.DIPLOE]
    n_bone = int(np.argmax(bone))
    assert bone[n_bone] > 0.5 and last_brain < n_bone < first_air  # skull between brain and air
    scalp = ray[Tissue.SOFT_TISSUE] + ray[Tissue.FAT]
    assert scalp[n_bone + 1 : first_air + 1].max() > 0.5  # scalp between skull and air
    assert float(ray[Tissue.SOFT_TISSUE, :last_brain].max()) == 0.0  # no scalp inside the brain


def test_eyes_sit_in_front_on_both_sides(head):
    q, fractions, _ = head
    qx, qy, qz = q
    vitreous = fractions[Tissue.VITREOUS] > 0.5
    assert vitreous.any()
    assert np.all(qy[vitreous] > 0) and np.all(qz[vitreous] < 0)  # anterior, below the head centre
    left, right = int((vitreous & (qx < 0)).sum()), int((vitreous & (qx > 0)).sum())
    assert left > 0 and right > 0 and abs(left - right) <= 0.5 * max(left, right)
    assert (fractions[Tissue.SINUS_AIR] > 0.5).any()


def test_modulation_fields_are_unit_sd(head):
    _, _, fields = head
    assert set(fields) == {"cortical", "diploe", "texture"}
    for name, field in fields.items():
        assert field.shape == SHAPE, name
        assert abs(float(field.mean())) < 1e-5 and float(field.std()) == pytest.approx(1.0, abs=1e-5), name
