"""Tests for pipeline.data.phantoms.mr_acquisition: signal equations, scanner draws, noise, coil, misregistration."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from pipeline.data.phantoms.head_tissues import N_HEAD_TISSUES, HeadTissue
from pipeline.data.phantoms.mr_acquisition import (FAMILIES, Misregistration, MRProtocol, acquire_mr,
                                                   draw_misregistration, draw_protocol, misregister, tissue_signals)

T = HeadTissue
QUIET = dict(psf_sigma_mm=(0.01, 0.01, 0.01), bias_sd=0.0, bias_scale_mm=80.0, coil_edge_mm=-1e4, coil_width_mm=10.0,
             coil_floor=1.0, snr_wm=30.0, scale=1.0)


def protocol(family, **kw):
    base = dict(family=family, field_t=1.5, tr_ms=20.0, te_ms=4.0, flip_deg=25.0, ti_ms=0.0, **QUIET)
    return MRProtocol(**{**base, **kw})


def test_signal_equations_match_hand_computed_values():
    # SPGR, 1.5 T, white matter: PD 0.70, T1 780 ms, T2* 55 ms (the table)
    a = math.radians(25.0)
    e1 = math.exp(-20.0 / 780.0)
    expected = 0.70 * math.sin(a) * (1 - e1) / (1 - math.cos(a) * e1) * math.exp(-4.0 / 55.0)
    assert tissue_signals(protocol("spgr"))[T.WHITE_MATTER] == pytest.approx(expected, rel=1e-12)
    # MPRAGE, 3 T, CSF: PD 1, T1 4300 ms, T2* 900 ms; TI 900, TR 2000: signed, almost nulled
    p = protocol("mprage", field_t=3.0, tr_ms=2000.0, te_ms=3.0, flip_deg=8.0, ti_ms=900.0)
    expected = (1 - 2 * math.exp(-900 / 4300) + math.exp(-2000 / 4300)) * math.sin(math.radians(8)) * math.exp(-3 / 900)
    assert tissue_signals(p)[T.CSF] == pytest.approx(expected, rel=1e-12)
    assert abs(expected) < 0.1 * tissue_signals(p)[T.WHITE_MATTER]
    # T2 TSE, 1.5 T, CSF: PD 1, T1 4000, T2 2000
    p = protocol("t2_tse", tr_ms=4000.0, te_ms=100.0, flip_deg=90.0)
    assert tissue_signals(p)[T.CSF] == pytest.approx((1 - math.exp(-1.0)) * math.exp(-0.05), rel=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_keeps_its_contrast_on_every_scanner_it_draws(family):
    rng = np.random.default_rng(0)
    for _ in range(30):
        s = np.abs(tissue_signals(draw_protocol(rng, family)))
        s /= s.max()
        for dark in (T.AIR, T.SINUS_AIR, T.CORTICAL_BONE, T.ENAMEL, T.DENTINE):
            assert s[dark] < 0.02, dark
        if family == "t2_tse":
            assert s[T.CSF] > s[T.GREY_MATTER] > s[T.WHITE_MATTER] and s[T.CSF] > s[T.FAT]
        else:  # T1-weighted: fat brightest, white over grey matter over CSF
            assert s[T.FAT] > s[T.WHITE_MATTER] > s[T.GREY_MATTER] > s[T.CSF]


def test_protocols_vary_between_subjects_within_the_documented_ranges():
    rng = np.random.default_rng(1)
    drawn = [draw_protocol(rng, "spgr") for _ in range(50)]
    assert {p.field_t for p in drawn} == {1.5, 3.0}
    assert all(8.0 <= p.tr_ms <= 25.0 and 2.0 <= p.te_ms <= 5.0 and 12.0 <= p.flip_deg <= 30.0 for p in drawn)
    assert np.std([p.flip_deg for p in drawn]) > 3.0
    mprage = draw_protocol(rng, "mprage")
    assert 800.0 <= mprage.ti_ms <= 1100.0
    with pytest.raises(ValueError, match="unknown MR family"):
        draw_protocol(rng, "flair")


def _half_white_matter(shape=(48, 40, 40)) -> np.ndarray:
    fractions = np.zeros((N_HEAD_TISSUES, *shape), np.float32)
    fractions[T.AIR, : shape[0] // 2] = 1.0
    fractions[T.WHITE_MATTER, shape[0] // 2:] = 1.0
    return fractions


def test_noise_is_rician_with_the_drawn_snr():
    fractions = _half_white_matter()
    p = protocol("spgr", snr_wm=20.0)
    qz = np.zeros(fractions.shape[1:], np.float32)
    mr = acquire_mr(np.random.default_rng(2), fractions, p, spacing=np.ones(3), qz=qz)
    air, wm = mr[:20], mr[28:]
    # background: Rayleigh, mean / SD = sqrt(pi/2) / sqrt(2 - pi/2)
    assert air.mean() / air.std() == pytest.approx(math.sqrt(math.pi / 2) / math.sqrt(2 - math.pi / 2), rel=0.03)
    sigma = air.mean() / math.sqrt(math.pi / 2)
    assert wm.mean() / sigma == pytest.approx(20.0, rel=0.05)  # Rician ~ Gaussian at SNR 20


def test_coil_sensitivity_falls_towards_the_neck():
    fractions = np.zeros((N_HEAD_TISSUES, 8, 8, 61), np.float32)
    fractions[T.WHITE_MATTER] = 1.0
    qz = np.broadcast_to(np.linspace(-150.0, 150.0, 61, dtype=np.float32), (8, 8, 61))
    p = protocol("spgr", snr_wm=1e6, coil_edge_mm=0.0, coil_width_mm=5.0, coil_floor=0.4)
    mr = acquire_mr(np.random.default_rng(3), fractions, p, spacing=np.ones(3), qz=qz)
    assert mr[..., -1].mean() / mr[..., 0].mean() == pytest.approx(1 / 0.4, rel=1e-3)
    assert mr[..., 30].mean() / mr[..., -1].mean() == pytest.approx(0.7, abs=0.05)  # half-way at the edge


def _smooth_image(shape, seed=0):
    from scipy import ndimage

    return ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2.0).astype(np.float32)


@pytest.mark.parametrize("flip", [1.0, -1.0])
def test_pure_translation_shifts_the_image_in_world_mm(flip):
    image = _smooth_image((20, 18, 16))
    affine = np.diag([flip * 2.0, flip * 2.0, 2.0, 1.0])
    affine[:3, 3] = (10.0, -5.0, 3.0)
    mis = Misregistration(rotation_deg=(0.0, 0.0, 0.0), translation_mm=(2.0, 0.0, 0.0), elastic_sd_mm=0.0,
                          elastic_scale_mm=40.0)
    warped, moved = misregister(np.random.default_rng(0), image, affine, (0.0, 0.0, 0.0), mis)
    # the MR at x shows the anatomy at x + 2 mm in world x: one voxel along +i (RAS) or -i (LPS-like)
    if flip > 0:
        np.testing.assert_allclose(warped[:-1], image[1:], atol=1e-5)
    else:
        np.testing.assert_allclose(warped[1:], image[:-1], atol=1e-5)
    np.testing.assert_allclose(moved, 2.0, atol=1e-5)


def test_rotation_pivots_about_the_given_centre():
    image = _smooth_image((31, 31, 9))
    affine = np.eye(4)
    centre = (15.0, 15.0, 4.0)
    mis = Misregistration(rotation_deg=(0.0, 0.0, 1.0), translation_mm=(0.0, 0.0, 0.0), elastic_sd_mm=0.0,
                          elastic_scale_mm=40.0)
    _, moved = misregister(np.random.default_rng(0), image, affine, centre, mis)
    assert moved[15, 15, 4] < 1e-4
    radius = 15.0 * math.sqrt(2.0)
    assert moved[0, 0, 4] == pytest.approx(2 * radius * math.sin(math.radians(0.5)), rel=1e-3)


def test_drawn_misregistration_is_sub_millimetre_to_about_a_millimetre():
    rng = np.random.default_rng(4)
    rigid = []
    for _ in range(200):
        mis = draw_misregistration(rng)
        # a point 80 mm from the centre: rotation moves it by ~ angle x 80 mm, plus the translation
        rigid.append(np.deg2rad(np.linalg.norm(mis.rotation_deg)) * 80.0 + np.linalg.norm(mis.translation_mm))
        assert 0.15 <= mis.elastic_sd_mm <= 0.45
    assert 0.3 < np.median(rigid) < 1.2 and np.percentile(rigid, 95) < 2.5


def test_protocol_is_json_ready():
    record = dataclasses.asdict(draw_protocol(np.random.default_rng(5), "mprage"))
    assert record == draw_protocol(np.random.default_rng(5), "mprage").as_dict()
    assert record["family"] == "mprage" and isinstance(record["psf_sigma_mm"], tuple)
