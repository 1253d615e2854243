"""pipeline.xray.drr_render: one CT's pairs as a worker renders them. The pitch is fitted where the CT is read
(checked against the extent worked out by hand), the pair's row index alone seeds its noise, and the rows name
the files written."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.xray.drr_render import CTTask, DRRDatasetConfig, render_ct, sample_geometries
from pipeline.xray.radiograph import RealismConfig

N, SPACING = 32, 4.0


def _write_ct(path: Path) -> Path:
    """A soft-tissue cylinder (40 HU) in air with a bone rod (1200 HU), 32^3 voxels of 4 mm."""
    axis = (np.arange(N) - (N - 1) / 2.0) * SPACING
    x, y, _ = np.meshgrid(axis, axis, axis, indexing="ij")
    hu = np.full((N, N, N), -1000, np.int16)
    hu[x**2 + y**2 < 50.0**2] = 40
    hu[(x - 15.0) ** 2 + y**2 < 10.0**2] = 1200
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(hu, np.diag([SPACING, SPACING, SPACING, 1.0])), path)
    return path


def _task(ct: Path, config: DRRDatasetConfig, *, first_index: int) -> CTTask:
    poses = sample_geometries(np.random.default_rng(0), config, pixel_spacing_mm=1.0)
    return CTTask("CT01", ct, "train", tuple(poses), first_index)


@pytest.fixture()
def ct(tmp_path: Path) -> Path:
    return _write_ct(tmp_path / "cts" / "CT01" / "ct.nii.gz")


def test_pitch_is_fitted_to_the_ct_where_it_is_read(ct, tmp_path):
    config = DRRDatasetConfig(projections_per_ct=2, detector_size=16, realism=None)
    rows, saturated = render_ct(_task(ct, config, first_index=0), config, tmp_path / "out", overwrite=False)
    # largest extent between voxel centres 31 x 4 mm = 124 mm, magnified 1500 / 1000, 5 % margin, 16 pixels
    assert [r["pixel_spacing_mm"] for r in rows] == [round(124.0 * 1.5 * 1.05 / 16, 4)] * 2
    assert saturated == 0 and [r["projection_id"] for r in rows] == ["CT01_p000", "CT01_p001"]
    for row in rows:
        for key in ("se", "de_soft", "de_bone", "lung_path"):
            image = nib.load(tmp_path / "out" / row[key])
            assert image.shape == (16, 16) and np.isfinite(image.get_fdata()).all()
    assert rows[0]["split"] == "train" and rows[0]["ct"] == str(ct.resolve())


def test_the_row_index_alone_seeds_the_noise(ct, tmp_path):
    config = DRRDatasetConfig(projections_per_ct=1, detector_size=16, realism=RealismConfig(mas_high=0.5, mas_low=2.0))
    images = {}
    for name, first in (("a", 7), ("b", 7), ("c", 8)):
        rows, _ = render_ct(_task(ct, config, first_index=first), config, tmp_path / name, overwrite=False)
        images[name] = {k: nib.load(tmp_path / name / rows[0][k]).get_fdata() for k in ("se", "de_soft_noiseless")}
    assert np.array_equal(images["a"]["se"], images["b"]["se"])  # the same row: the same noise
    assert not np.array_equal(images["a"]["se"], images["c"]["se"])  # another row: other noise
    assert np.array_equal(images["a"]["de_soft_noiseless"], images["c"]["de_soft_noiseless"])  # the same view
    with pytest.raises(FileExistsError):
        render_ct(_task(ct, config, first_index=7), config, tmp_path / "a", overwrite=False)
