"""What phantom families share: the grid a size names, and subject folders with seeds that do not depend
on how many subjects are written, nor on how many processes write them."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

# Light imports only: the worker processes import this module to find _record_seed.
from pipeline.data.phantoms.dataset import phantom_grid, subject_folders, write_subjects

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


def _record_seed(folder: Path, subject_seed: int, *, fail_on: str | None = None) -> None:
    """A subject writer that pickles (module level): the seed it was given, in the folder."""
    if folder.name == fail_on:
        raise RuntimeError(f"{folder.name}: cannot make this subject")
    (folder / "seed.json").write_text(json.dumps(subject_seed))


def _written(tmp_path, workers, **kwargs):
    options = dict(n=4, seed=3, subject_id=lambda i: f"S{i:02d}", overwrite=False, progress=False, desc="x",
                   write_subject=_record_seed)
    folders = write_subjects(tmp_path, workers=workers, **{**options, **kwargs})
    return folders, [json.loads((f / "seed.json").read_text()) for f in folders]


def test_write_subjects_gives_every_subject_its_own_seed_whatever_the_workers(tmp_path):
    one, seeds_one = _written(tmp_path / "one", 1)
    two, seeds_two = _written(tmp_path / "two", 2)
    assert [f.name for f in one] == [f.name for f in two] == ["S00", "S01", "S02", "S03"]
    # the seeds subject_folders hands out, independent of the processes that used them
    assert seeds_one == seeds_two == [seed for _, seed in _folders(tmp_path / "ref", 4)]
    with pytest.raises(ValueError, match="workers must be >= 1"):
        _written(tmp_path / "zero", 0)
    assert not (tmp_path / "zero").exists()  # refused before any folder is made


def test_write_subjects_raises_a_failing_subject_from_the_worker(tmp_path):
    with pytest.raises(RuntimeError, match="S02: cannot make this subject"):
        _written(tmp_path, 2, write_subject=partial(_record_seed, fail_on="S02"))
    # the other subjects that ran are complete files, not half-written ones
    done = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("S*/seed.json"))]
    assert 1 <= len(done) <= 3 and not (tmp_path / "S02" / "seed.json").exists()


def test_cli_workers_makes_the_same_phantoms_and_refuses_zero(tmp_path, capsys):
    import nibabel as nib

    from scripts.make_phantoms import main as make_phantoms_main

    common = ["--anatomy", "chest", "--n", "2", "--size", "tiny", "--seed", "4"]
    assert make_phantoms_main([*common, "--out", str(tmp_path / "a"), "--workers", "1"]) == 0
    assert make_phantoms_main([*common, "--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    for subject in ("2TP001", "2TP002"):
        for name in ("ct.nii.gz", "tumours.nii.gz"):
            a, b = (nib.load(tmp_path / run / subject / name) for run in ("a", "b"))
            assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)) and np.array_equal(a.affine, b.affine)
        assert (tmp_path / "a" / subject / "tumours.json").read_text() == (tmp_path / "b" / subject / "tumours.json").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        make_phantoms_main(["--out", str(tmp_path / "c"), "--n", "2", "--workers", "0"])
    assert stop.value.code == 2 and "--workers: must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
