"""Physics drawn per image (pipeline/xray/randomisation.py): draws stay in their ranges, vary, are
reproducible; a DRR set with drawn physics writes them to the manifest, and each pair is the DE
subtraction of its own system."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.io.images2d import load_image_2d
from pipeline.xray.drr_dataset import DRRDatasetConfig, build_drr_dataset, render_pair
from pipeline.xray.physics import cancellation_weight, xray_images
from pipeline.xray.radiograph import RealismConfig
from pipeline.xray.randomisation import PhysicsDraw, PhysicsRanges, draw_physics, physics_rng
from transforms.drr import ProjectionGeometry


def test_draws_stay_in_range_vary_and_reproduce():
    ranges = PhysicsRanges()
    draws = [draw_physics(physics_rng(3, i), ranges) for i in range(200)]
    assert draws[7] == draw_physics(physics_rng(3, 7), ranges)
    assert draws[7] != draw_physics(physics_rng(4, 7), ranges)
    for name, allowed in (("kvp_low", ranges.kvp_low), ("kvp_high", ranges.kvp_high),
                          ("al_filter_mm", ranges.al_filter_mm)):
        values = {getattr(d, name) for d in draws}
        assert values == set(allowed)  # every value drawn, nothing else
    for name in ("spr", "scatter_sigma_mm", "mas_high", "psf_sigma_mm", "quantum_efficiency"):
        values = np.array([getattr(d.realism, name) for d in draws])
        lo, hi = getattr(ranges, name)
        assert lo <= values.min() and values.max() <= hi and values.std() > 0.1 * (hi - lo) / np.sqrt(12)
    ratios = np.array([d.realism.mas_low / d.realism.mas_high for d in draws])
    assert ranges.mas_low_ratio[0] <= ratios.min() and ratios.max() <= ranges.mas_low_ratio[1]
    # dose: log-uniform, so the geometric midpoint splits the draws about evenly
    mid = np.sqrt(np.prod(ranges.mas_high))
    assert 0.35 < np.mean([d.realism.mas_high < mid for d in draws]) < 0.65
    with pytest.raises(ValueError, match="kVp"):
        PhysicsRanges(kvp_low=(100.0,), kvp_high=(110.0,))


def test_filtration_hardens_the_beam_and_changes_the_weights():
    lines = torch.tensor([[[15.0]], [[1.0]]])  # 15 g/cm^2 soft tissue + 1 g/cm^2 bone
    thin, thick = (xray_images(lines, al_filter_mm=al) for al in (2.5, 4.5))
    assert float(thick["low"]) < float(thin["low"])  # harder beam: less attenuation per g/cm^2
    assert cancellation_weight("bone", al_filter_mm=4.5) != cancellation_weight("bone", al_filter_mm=2.5)


def test_each_pair_is_its_own_systems_subtraction():
    """Noiseless draw (realism off): the pair must equal xray_images at the drawn kVps and filtration,
    and the SE image must be the high-kVp exposure."""
    volume = torch.zeros(2, 8, 8, 8)
    volume[0, 2:6, 2:6, 2:6] = 1.0
    volume[1, 3:5, 3:5, 3:5] = 1.5
    geometry = ProjectionGeometry(angle_deg=0.0, detector_shape=(8, 8), pixel_spacing_mm=(8.0, 8.0), parallel=True)
    draw = PhysicsDraw(kvp_low=70.0, kvp_high=130.0, al_filter_mm=3.5, realism=RealismConfig(enabled=False))
    images = render_pair(volume, np.diag([10.0, 10.0, 10.0, 1.0]), geometry, config=DRRDatasetConfig(), physics=draw)
    from transforms.drr import project_line_integrals

    expected = xray_images(project_line_integrals(volume, np.diag([10.0, 10.0, 10.0, 1.0]), geometry),
                           kvp_se=130.0, kvp_low=70.0, kvp_high=130.0, al_filter_mm=3.5)
    for key in ("se", "de_soft", "de_bone"):
        assert torch.allclose(images[key], expected[key])
    assert torch.allclose(images["se"], images["de_soft"] + images["de_bone"], atol=1e-4)


def test_dataset_with_drawn_physics_records_it(tmp_path):
    import nibabel as nib

    hu = np.full((24, 24, 24), -1000, np.int16)
    hu[4:20, 4:20, 4:20] = 40
    hu[10:14, 10:14, 4:20] = 1200
    (tmp_path / "cts" / "A").mkdir(parents=True)
    nib.save(nib.Nifti1Image(hu, np.diag([5.0, 5.0, 5.0, 1.0])), tmp_path / "cts" / "A" / "ct.nii.gz")
    config = DRRDatasetConfig(projections_per_ct=6, detector_size=16, val_fraction=0.0, test_fraction=0.0,
                              physics_ranges=PhysicsRanges())
    manifest = build_drr_dataset(tmp_path / "cts", tmp_path / "drr", config=config, progress=False)
    table = pd.read_csv(manifest)
    assert {"kvp_low", "kvp_high", "al_filter_mm", "spr", "mas_high", "psf_sigma_mm"} <= set(table.columns)
    assert table[["kvp_low", "kvp_high", "al_filter_mm", "spr"]].drop_duplicates().shape[0] > 1
    assert table["de_soft_noiseless"].str.len().gt(0).all()  # drawn physics always has realism
    # a harder beam (higher kVp, more filtration) attenuates less: the body centre's SE value falls
    centre = np.array([float(load_image_2d(tmp_path / "drr" / p)[0][8, 8]) for p in table["se"]])
    hardness = table["kvp_high"].to_numpy() + 10.0 * table["al_filter_mm"].to_numpy()
    assert np.corrcoef(hardness, centre)[0, 1] < 0 or len(set(hardness)) == 1
