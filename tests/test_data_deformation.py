"""Deformed CT variants (pipeline.data.deformation): same grid, HU in range, bounded and seeded deformations."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.data.deformation import (
    DeformationConfig,
    deform_ct,
    deformed_variants,
    displacement_bound_mm,
    displacement_field,
    lung_box,
    write_deformed_variants,
)
from pipeline.io.volumes import write_nifti

SPACING = np.array([6.0, 6.0, 7.5])
SHAPE = (40, 32, 36)
# LAS storage (voxel axis 0 runs to the patient's left) with an offset: the code must use the affine
AFFINE = np.array([[-6.0, 0, 0, 120.0], [0, 6.0, 0, -96.0], [0, 0, 7.5, -130.0], [0, 0, 0, 1]])
LUNG_Z_MM = (-60.0, 60.0)  # world z of the lungs' base and apex
LUNG_Y_MM = (-40.0, 30.0)  # world y of their posterior and anterior edges


def _world_grid() -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")).reshape(3, -1)
    return (AFFINE[:3, :3] @ index + AFFINE[:3, 3:4]).reshape(3, *SHAPE)


def _chest(*, lungs: bool = True) -> np.ndarray:
    """Air around an elliptic body cylinder (40 HU), two box-shaped lungs (-850 HU), a bone bead (1000 HU)."""
    x, y, z = _world_grid()
    hu = np.full(SHAPE, -1000.0)
    hu[(x / 100.0) ** 2 + (y / 80.0) ** 2 < 1.0] = 40.0
    if lungs:
        in_z = (z >= LUNG_Z_MM[0]) & (z <= LUNG_Z_MM[1])
        in_y = (y >= LUNG_Y_MM[0]) & (y <= LUNG_Y_MM[1])
        hu[in_z & in_y & (np.abs(x) > 15) & (np.abs(x) < 60)] = -850.0
    hu[(np.abs(x) <= 6) & (np.abs(y + 60) <= 6) & (np.abs(z) <= 8)] = 1000.0  # spine-like bead behind the lungs
    return hu.astype(np.int16)


def test_lung_box_finds_the_lungs_not_the_air_around_the_body():
    box = lung_box(_chest(), AFFINE, stride=1)
    assert box is not None
    # percentiles of voxel centres: within one voxel of the painted edges
    assert box.z_base == pytest.approx(LUNG_Z_MM[0], abs=7.5) and box.z_apex == pytest.approx(LUNG_Z_MM[1], abs=7.5)
    assert box.y_posterior == pytest.approx(LUNG_Y_MM[0], abs=6) and box.y_anterior == pytest.approx(LUNG_Y_MM[1], abs=6)
    assert lung_box(_chest(lungs=False), AFFINE) is None


@pytest.mark.parametrize("config", [DeformationConfig(), DeformationConfig(max_displacement_mm=0.0, breathing_mm=9.0),
                                    DeformationConfig(max_displacement_mm=7.0, breathing_mm=0.0, control_spacing_mm=30.0)])
def test_displacement_never_exceeds_the_stated_bound(config: DeformationConfig):
    lungs = lung_box(_chest(), AFFINE)
    bound = displacement_bound_mm(config)
    largest = []
    for seed in range(8):
        field, _, _ = displacement_field(SHAPE, AFFINE, rng=np.random.default_rng(seed), config=config, lungs=lungs)
        largest.append(float(np.linalg.norm(field, axis=0).max()))
    assert max(largest) <= bound + 1e-4
    if config.breathing_mm == 0:  # the random field alone reaches its stated size
        assert min(largest) == pytest.approx(config.max_displacement_mm, rel=1e-5)
    else:
        assert max(largest) > config.max_displacement_mm + 0.3 * config.breathing_mm


def test_breathing_moves_the_diaphragm_by_the_breathing_state():
    config = DeformationConfig(max_displacement_mm=0.0, breathing_mm=8.0, ap_ratio=0.5)
    lungs = lung_box(_chest(), AFFINE)
    field, _, params = displacement_field(SHAPE, AFFINE, rng=np.random.default_rng(1), config=config, lungs=lungs)
    b = params["breathing_state"]
    assert -1.0 <= b <= 1.0 and params["lungs_found"]
    # below the lungs everything moves with the diaphragm: -b * 8 mm along z; above the apex nothing does
    assert field[2, :, :, 0] == pytest.approx(-b * 8.0, abs=1e-3)
    assert field[2, :, :, -1] == pytest.approx(0.0, abs=1e-3)
    assert np.abs(field[0]).max() == 0.0  # breathing is antero-posterior and cranio-caudal only
    assert np.abs(field[1]).max() == pytest.approx(abs(b) * 4.0, abs=1e-3)


def test_image_moves_no_more_than_the_bound():
    """Independent of the field: the bone bead's centre of mass moves at most the bound (+ half a voxel)."""
    hu = _chest()
    config = DeformationConfig(max_displacement_mm=6.0, breathing_mm=6.0)
    x = _world_grid()

    def bead_centre(volume: np.ndarray) -> np.ndarray:
        weight = np.clip(volume.astype(float) - 40.0, 0.0, None) * (np.abs(x[1] + 60) < 20)
        return (x * weight).reshape(3, -1).sum(axis=1) / weight.sum()

    shifts = [np.linalg.norm(bead_centre(deform_ct(hu, AFFINE, seed=s, config=config)[0]) - bead_centre(hu))
              for s in range(4)]
    assert max(shifts) <= displacement_bound_mm(config) + SPACING.max() / 2
    assert max(shifts) > 0.5  # it did move


def test_seed_reproducible_and_different_seeds_differ():
    hu = _chest()
    first, params = deform_ct(hu, AFFINE, seed=11)
    again, _ = deform_ct(hu, AFFINE, seed=11)
    other, _ = deform_ct(hu, AFFINE, seed=12)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert params["seed"] == 11
    two = [v for v, _ in deformed_variants(hu, AFFINE, k=2, seed=5)]
    three = [v for v, _ in deformed_variants(hu, AFFINE, k=3, seed=5)]
    assert np.array_equal(two[0], three[0]) and np.array_equal(two[1], three[1])  # variant i whatever k
    assert not np.array_equal(three[0], three[1])


def test_written_variants_keep_the_grid_the_hu_range_and_the_air_outside(tmp_path: Path):
    hu = _chest()
    ct = write_nifti(hu, AFFINE, tmp_path / "CXR009" / "ct.nii.gz")
    folders = write_deformed_variants(ct, tmp_path / "variants", subject_id="CXR009", k=2, seed=3)
    assert [f.name for f in folders] == ["CXR009-D01", "CXR009-D02"]
    source = nib.load(ct)
    for folder in folders:
        image = nib.load(folder / "ct.nii.gz")
        assert image.shape == SHAPE and image.get_data_dtype() == np.int16
        assert np.allclose(image.affine, source.affine)
        assert np.allclose(image.get_qform(), source.get_qform()) and np.allclose(image.get_sform(), source.get_sform())
        values = np.asarray(image.dataobj)
        assert hu.min() <= values.min() and values.max() <= hu.max()
        assert (values[[0, -1]][:, [0, -1]] == -1000).all()  # corners of the axial plane stay air
        assert not np.array_equal(values, hu)
        info = json.loads((folder / "deformation.json").read_text())
        assert info["max_displacement_found_mm"] <= info["bound_mm"] and info["lungs_found"]
    with pytest.raises(FileExistsError, match="CXR009-D01"):
        write_deformed_variants(ct, tmp_path / "variants", subject_id="CXR009", k=1)


def test_config_refuses_negative_sizes():
    with pytest.raises(ValueError, match=">= 0"):
        DeformationConfig(breathing_mm=-1.0)


def test_get_chest_ct_writes_variants_beside_an_existing_ct(tmp_path: Path, capsys):
    from scripts.get_chest_ct import main

    write_nifti(_chest(), AFFINE, tmp_path / "CXR001" / "ct.nii.gz")  # present: no download
    assert main(["--out", str(tmp_path), "--variants", "1", "--breathing", "4"]) == 0
    info = json.loads((tmp_path / "CXR001-D01" / "deformation.json").read_text())
    assert info["config"]["breathing_mm"] == 4.0
    assert main(["--out", str(tmp_path), "--variants", "1"]) == 2  # refused, one line
    assert "CXR001-D01" in capsys.readouterr().err
