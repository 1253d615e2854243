"""The quality benchmark's own measures: the stripe ratio and the tables it reads."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scripts.benchmark_quality import region_mae, stripe_ratio


def test_stripe_ratio_sees_slice_to_slice_jumps_and_not_smooth_errors():
    rng = np.random.default_rng(0)
    shape = (20, 22, 18)
    ct = rng.normal(0, 300, shape).astype(np.float32)
    mask = np.ones(shape, np.uint8)
    per_slice = rng.normal(0, 40, shape[2])[None, None, :]  # one offset per axial slice: stripes
    assert stripe_ratio(ct + per_slice, ct, mask) > 10
    grid = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    smooth = 30 * np.sin(grid[0] / 3) + 30 * np.sin(grid[1] / 3) + 30 * np.sin(grid[2] / 3)  # no preferred axis
    assert 0.8 < stripe_ratio(ct + smooth, ct, mask) < 1.25
    # only voxel pairs inside the body count: a jump outside it is ignored
    body = np.zeros(shape, np.uint8)
    body[:, :, :9] = 1
    jump = np.zeros(shape)
    jump[:, :, 9:] = 500
    assert stripe_ratio(ct + smooth + jump, ct, body) < 1.25


def test_region_mae_reads_the_long_table(tmp_path):
    rows = [("pix2pix", "a", "air", "mae_hu", 100.0), ("pix2pix", "b", "air", "mae_hu", 200.0),
            ("pix2pix", "a", "bone", "mae_hu", 50.0), ("pix2pix", "a", "body", "mae_hu", 70.0),
            ("tissue_lookup", "a", "air", "mae_hu", 900.0), ("pix2pix", "a", "air", "me_hu", -5.0)]
    path = tmp_path / "results.csv"
    pd.DataFrame(rows, columns=["method", "subject_id", "region", "metric", "value"]).to_csv(path, index=False)
    assert region_mae(path) == {"air": 150.0, "bone": 50.0}
