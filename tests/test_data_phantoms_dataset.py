"""What phantom families share: the grid a size names, and subject folders with seeds that do not depend
on how many subjects are written."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.phantoms.dataset import phantom_grid, subject_folders

SIZES = {"small": ((10, 12, 8), (2.0, 2.0, 3.0))}
FOV = np.array([200.0, 240.0, 160.0])


def test_phantom_grid_presets_and_shapes_keep_the_field_of_view():
    shape, spacing = phantom_grid("small", sizes=SIZES, fov_mm=FOV, min_voxels=8)
    assert shape == (10, 12, 8) and np.allclose(spacing, [2.0, 2.0, 3.0])
    shape, spacing = phantom_grid((100, 120, 80), sizes=SIZES, fov_mm=FOV, min_voxels=8)
    assert np.allclose(np.asarray(shape) * spacing, FOV)
    with pytest.raises(ValueError, match="unknown chest size 'huge'"):
        phantom_grid("huge", sizes=SIZES, fov_mm=FOV, min_voxels=8, what="chest")
    with pytest.raises(ValueError, match=">= 16"):
        phantom_grid((10, 40, 40), sizes=SIZES, fov_mm=FOV, min_voxels=16)


def _folders(tmp_path, n, **kwargs):
    options = dict(n=n, seed=3, subject_id=lambda i: f"S{i:02d}", overwrite=False, progress=False, desc="x")
    return list(subject_folders(tmp_path, **{**options, **kwargs}))


def test_subject_seeds_do_not_depend_on_n_and_folders_are_made(tmp_path):
    three = _folders(tmp_path / "a", 3)
    five = _folders(tmp_path / "b", 5)
    assert [seed for _, seed in three] == [seed for _, seed in five][:3]
    assert len({seed for _, seed in five}) == 5
    assert [f.name for f, _ in three] == ["S00", "S01", "S02"] and all(f.is_dir() for f, _ in three)


def test_existing_folders_are_refused_before_anything_is_made(tmp_path):
    (tmp_path / "S01").mkdir()
    with pytest.raises(FileExistsError, match="S01: subject folder .* already exists"):
        _folders(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S01"]
    assert len(_folders(tmp_path, 3, overwrite=True)) == 3


def test_first_id_numbers_the_folders_and_keeps_the_seeds(tmp_path):
    plain = _folders(tmp_path / "a", 2, subject_id=lambda k: f"S{k + 1:03d}")
    later = _folders(tmp_path / "b", 2, subject_id=lambda k: f"S{k + 1:03d}", first_id=901)
    assert [f.name for f, _ in later] == ["S901", "S902"]
    assert [seed for _, seed in later] == [seed for _, seed in plain]
    with pytest.raises(ValueError, match="first_id must be >= 1"):
        _folders(tmp_path / "c", 2, first_id=0)
