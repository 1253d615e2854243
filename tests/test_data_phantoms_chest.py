"""Chest CT phantoms (pipeline/data/phantoms/chest.py): determinism, HU classes, anatomy sides read
through the affine, tumour labels and the behind-a-rib flag checked against the CT itself."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pipeline.data.phantoms.chest import HU, make_chest_subject, subject_id

SMALL = (80, 56, 72)  # 5 mm voxels: fast, yet ribs and tumours are resolved


def _world(subject) -> np.ndarray:
    """World RAS (mm) coordinates of every voxel, (X, Y, Z, 3)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in subject.ct.shape], indexing="ij"), axis=-1)
    return ijk @ subject.affine[:3, :3].T + subject.affine[:3, 3]


@pytest.fixture(scope="module")
def subjects():
    return [make_chest_subject(seed=seed, size=SMALL) for seed in range(4)]


def test_same_seed_same_arrays_and_subjects_differ():
    a, b = make_chest_subject(seed=3, size="tiny"), make_chest_subject(seed=3, size="tiny")
    assert np.array_equal(a.ct, b.ct) and np.array_equal(a.tumour_labels, b.tumour_labels)
    c = make_chest_subject(seed=4, size="tiny")
    assert a.ct.shape == c.ct.shape == (50, 35, 45) and not np.array_equal(a.ct, c.ct)
    assert a.params["breath"] != c.params["breath"]
    assert subject_id(0) == "2TP001"
    with pytest.raises(ValueError, match="size"):
        make_chest_subject(seed=0, size="huge")


def test_ct_types_affine_and_tissue_classes(subjects):
    s = subjects[0]
    assert s.ct.dtype == np.int16 and s.tumour_labels.dtype == np.uint8
    assert nib.aff2axcodes(s.affine) == ("L", "A", "S")
    body = s.ct > -500
    lung = (s.ct < -600) & (s.ct > -950)
    assert 0.02 < lung.mean() < 0.3 and 0.2 < body.mean() < 0.8
    assert (s.ct > 400).sum() > 500  # bone (ribs are partial-volume mixtures on 5 mm voxels)
    corner = s.ct[:3, :3, :]
    assert np.all(corner == HU["air"])


def test_heart_makes_the_left_lung_smaller(subjects):
    # Anatomy through the affine only: the heart lies left of the midline, so the left lung (world x < 0
    # in RAS) is smaller than the right one in every subject (real lungs: right ~55 %).
    for s in subjects:
        x = _world(s)[..., 0]
        lung = (s.ct < -600) & (s.ct > -950) & (s.tumour_labels == 0)
        left, right = int((lung & (x < 0)).sum()), int((lung & (x > 0)).sum())
        assert left < 0.97 * right, (s.params, left, right)


def test_tumour_labels_match_the_listed_tumours(subjects):
    flags = []
    for s in subjects:
        assert 1 <= len(s.tumours) <= 4
        world = _world(s)
        spacing = np.abs(np.diag(s.affine)[:3])
        for t in s.tumours:
            assert 5.0 <= t.diameter_mm <= 40.0
            mask = s.tumour_labels == t.label
            assert mask.any()
            centroid = world[mask].mean(axis=0)
            assert np.linalg.norm(centroid - np.asarray(t.centre_mm)) <= 0.25 * t.diameter_mm + spacing.max()
            # Labelled voxels are at least half tumour (before the PSF blur): denser than lung (-850 HU).
            assert float(np.median(s.ct[mask])) > -600
            # Flagged: the AP line through the centre meets bone (> 300 HU: above any soft tissue + noise).
            i, j, k = np.rint(np.linalg.solve(s.affine[:3, :3], np.asarray(t.centre_mm) - s.affine[:3, 3])).astype(int)
            column = s.ct[i, :, k]
            flags.append(t.behind_rib_ap)
            if t.behind_rib_ap:
                assert column.max() > 300
        assert set(np.unique(s.tumour_labels)) == {0, *(t.label for t in s.tumours)}
    assert any(flags) and not all(flags)
