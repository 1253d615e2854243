"""Chest CT phantoms (pipeline/data/phantoms/chest.py): determinism, HU classes, anatomy read through the
affine, tumour labels and flags checked against the CT itself, contrast and posture options."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from pipeline.data.phantoms.chest import HU, make_chest_subject, subject_id

SMALL = (80, 64, 72)  # 5 mm voxels: fast, yet ribs and tumours are resolved


def _world(subject) -> np.ndarray:
    """World RAS (mm) coordinates of every voxel, (X, Y, Z, 3)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in subject.ct.shape], indexing="ij"), axis=-1)
    return ijk @ subject.affine[:3, :3].T + subject.affine[:3, 3]


@pytest.fixture(scope="module")
def subjects():
    # without iodine: then nothing but bone exceeds ~150 HU (blood 40, organs <= 60, 10 HU noise)
    return [make_chest_subject(seed=seed, size=SMALL, contrast="none") for seed in range(6)]


def test_same_seed_same_arrays_and_subjects_differ():
    a, b = make_chest_subject(seed=3, size="tiny"), make_chest_subject(seed=3, size="tiny")
    assert np.array_equal(a.ct, b.ct) and np.array_equal(a.tumour_labels, b.tumour_labels)
    c = make_chest_subject(seed=4, size="tiny")
    assert a.ct.shape == c.ct.shape == (50, 40, 45) and not np.array_equal(a.ct, c.ct)
    assert a.params["breath"] != c.params["breath"]
    assert subject_id(0) == "2TP001"
    with pytest.raises(ValueError, match="size"):
        make_chest_subject(seed=0, size="huge")
    with pytest.raises(ValueError, match="contrast"):
        make_chest_subject(seed=0, size="tiny", contrast="iodine")
    with pytest.raises(ValueError, match="arms"):
        make_chest_subject(seed=0, size="tiny", arms="crossed")


def test_ct_types_affine_and_tissue_classes(subjects):
    for s in subjects:
        assert s.ct.dtype == np.int16 and s.tumour_labels.dtype == np.uint8
        assert nib.aff2axcodes(s.affine) == ("L", "A", "S")
        body = s.ct > -500
        lung = (s.ct < -600) & (s.ct > -950)
        assert 0.02 < lung.mean() < 0.3 and 0.15 < body.mean() < 0.8
        assert (s.ct > 400).sum() > 500  # bone (ribs are partial-volume mixtures on 5 mm voxels)
        assert np.all(s.ct[:2, -2:, :] == HU["air"])  # anterior corners of the field of view


def test_heart_makes_the_left_lung_smaller(subjects):
    # Anatomy through the affine only: the heart lies left of the midline, so the left lung (world x < 0
    # in RAS) is smaller than the right one in every subject (real lungs: right ~55 %).
    for s in subjects:
        x = _world(s)[..., 0]
        lung = (s.ct < -600) & (s.ct > -950) & (s.tumour_labels == 0)
        left, right = int((lung & (x < 0)).sum()), int((lung & (x > 0)).sum())
        assert left < 0.97 * right, (s.params, left, right)


def test_tumour_labels_match_the_listed_tumours(subjects):
    flags, overlaps, densities = [], set(), []
    for s in subjects:
        assert 1 <= len(s.tumours) <= 4
        world = _world(s)
        spacing = np.abs(np.diag(s.affine)[:3])
        for t in s.tumours:
            assert 5.0 <= t.diameter_mm <= 40.0 and -450.0 <= t.hu <= 60.0
            mask = s.tumour_labels == t.label
            assert mask.any()
            centroid = world[mask].mean(axis=0)
            assert np.linalg.norm(centroid - np.asarray(t.centre_mm)) <= 0.25 * t.diameter_mm + spacing.max()
            # Labelled voxels are at least half tumour (before the PSF blur): denser than lung (-850 HU).
            assert float(np.median(s.ct[mask])) > -700
            # Flagged: the AP line through the centre meets bone (> 200 HU: above any soft tissue + noise).
            i, j, k = np.rint(np.linalg.solve(s.affine[:3, :3], np.asarray(t.centre_mm) - s.affine[:3, 3])).astype(int)
            flags.append(t.behind_rib_ap)
            overlaps.add(t.overlap)
            densities.append(t.hu)
            if t.behind_rib_ap:
                assert s.ct[i, :, k].max() > 200 and t.overlap == "rib"
        assert set(np.unique(s.tumour_labels)) == {0, *(t.label for t in s.tumours)}
    assert any(flags) and not all(flags)
    assert {"rib", "none"} <= overlaps and overlaps & {"heart", "diaphragm"}, overlaps
    assert min(densities) < -150 < 0 < max(densities)  # solid and subsolid tumours


def test_contrast_changes_blood_only():
    """The same subject without and with iodine: only non-bone voxels change, and they become brighter."""
    plain = make_chest_subject(seed=7, size=SMALL, contrast="none")
    enhanced = make_chest_subject(seed=7, size=SMALL, contrast="arterial")
    assert plain.params["contrast"]["phase"] == "none" and enhanced.params["contrast"]["phase"] == "arterial"
    diff = enhanced.ct.astype(float) - plain.ct.astype(float)
    changed = np.abs(diff) > 60  # beyond the scanner noise of both (10 HU SD each)
    assert changed.sum() > 2000
    assert np.median(diff[changed]) > 100
    assert np.mean(plain.ct[changed] > 400) < 0.02  # blood and organs, not bone (but its partial-volume rim)
    assert np.array_equal(plain.tumour_labels, enhanced.tumour_labels)
    assert (enhanced.ct > 150).sum() > (plain.ct > 150).sum()


def test_rib_density_scales_the_ribs_only_and_leaves_every_other_draw_alone():
    plain = make_chest_subject(seed=7, size=SMALL, contrast="none")
    unit = make_chest_subject(seed=7, size=SMALL, contrast="none", rib_density=(1.0, 1.0))
    assert np.array_equal(plain.ct, unit.ct) and plain.params == unit.params  # a stream of its own
    heavy = make_chest_subject(seed=7, size=SMALL, contrast="none", rib_density=(1.3, 1.5))
    assert 1.3 <= heavy.params["rib_density"] <= 1.5 and plain.params["rib_density"] == 1.0
    assert np.array_equal(plain.tumour_labels, heavy.tumour_labels)
    diff = heavy.ct.astype(float) - plain.ct.astype(float)
    changed = np.abs(diff) > 60
    assert changed.sum() > 200 and np.all(diff[changed] > 0)  # brighter, nowhere darker
    assert np.median(plain.ct[changed]) > 150  # bone (marrow and cortex at 5 mm), not soft tissue (<= 60 HU here)
    # the spine is not a rib: the midline behind the heart keeps its HU
    assert not changed[SMALL[0] // 2 - 2 : SMALL[0] // 2 + 3].any()


def test_extra_tumours_sit_behind_ribs_and_leave_everything_else_alone():
    grid = (120, 96, 108)  # 3.3 mm: a rib's cortex is resolved well enough to read on the AP line
    plain = make_chest_subject(seed=3, size=grid, contrast="none")
    none = make_chest_subject(seed=3, size=grid, contrast="none", extra_tumours=(0, 0))
    assert np.array_equal(plain.ct, none.ct) and plain.params == none.params and plain.params["extra_tumours"] == 0
    more = make_chest_subject(seed=3, size=grid, contrast="none", extra_tumours=(3, 3))
    n = len(plain.tumours)
    assert more.params["extra_tumours"] == 3 and len(more.tumours) == n + 3  # this subject has room for all three
    assert more.tumours[:n] == plain.tumours  # the seed's own tumours first, unchanged
    extra = more.tumour_labels > n
    assert np.array_equal(np.where(extra, 0, more.tumour_labels), plain.tumour_labels)
    changed = more.ct != plain.ct
    near = ndimage.distance_transform_edt(~extra) <= 3  # partial volume and the scanner PSF reach a little beyond
    assert changed.any() and not (changed & ~near).any()  # the new tumours, nothing else
    for t in more.tumours[n:]:
        # the AP line through each new tumour's centre meets bone (> 200 HU; no iodine here), as the flag says
        ijk = np.linalg.solve(more.affine[:3, :3], np.asarray(t.centre_mm) - more.affine[:3, 3])
        i, _, k = np.rint(ijk).astype(int)
        assert t.behind_rib_ap and t.overlap == "rib" and more.ct[i, :, k].max() > 200
        assert 5.0 <= t.diameter_mm <= 40.0 and (more.tumour_labels == t.label).any()
    for bad in ((2, 1), (-1, 2), (0, 21), (1.5, 2)):
        with pytest.raises(ValueError, match="0 <= LOW <= HIGH"):
            make_chest_subject(seed=0, size="tiny", extra_tumours=bad)


def test_raised_arms_lift_the_humeri():
    """Bone above the lung apices and lateral to the chest: only with the arms raised."""
    side, raised = (make_chest_subject(seed=7, size=SMALL, arms=a) for a in ("side", "raised"))
    assert side.params["arms"] == "side" and raised.params["arms"] == "raised"
    assert raised.params["scan_top_mm"] is None  # this subject's scan range is not cut above the chest

    def lateral_bone_above(subject, z_mm: float) -> int:
        w = _world(subject)
        top = subject.affine[2, 3] + (subject.ct.shape[2] - 1) * subject.affine[2, 2]
        return int(((subject.ct > 500) & (np.abs(w[..., 0]) > 140) & (w[..., 2] > top - z_mm)).sum())

    assert lateral_bone_above(raised, 60.0) > 10 * max(1, lateral_bone_above(side, 60.0))


def test_a_rib_density_range_must_be_positive_and_ordered():
    for bad in ((1.5, 0.8), (0.0, 1.0), (-1.0, 1.0)):
        with pytest.raises(ValueError, match="0 < LOW <= HIGH"):
            make_chest_subject(seed=0, size="tiny", rib_density=bad)
