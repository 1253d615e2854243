"""Pinned regression: a fixed checkpoint on a fixed phantom MR gives a bit-identical sCT.

The fixture (``tests/data/golden``: a tiny seeded 2.5D generator and a 56x56x36 oblique LPS-like head
phantom MR) and the checksum below were recorded with the code as it stood before the pipeline/ layout
move (commit 72468b1). Any change to preprocessing, windowing, blending, inversion or writing that moves
a single voxel by 1 HU fails here; a deliberate change must re-record the checksum and say why.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np

from networks import Pix2PixUNet
from pipeline.sct.inference import SCTPredictor

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
SCT_SHA256 = "dffb560400c42e2e0aa342a92ce1de8304b9e11b4850f4029a36b7d3d4612440"


def test_fixed_checkpoint_gives_the_recorded_sct(tmp_path):
    generator = Pix2PixUNet(spatial_dims=2, in_channels=5, num_downs=3, base_channels=4)
    predictor = SCTPredictor(generator, mode="2.5d", patch_size=32, slab_size=5, device="cpu", progress=False)
    predictor.load_weights(GOLDEN / "generator_2p5d.pt")
    out = predictor.predict_file(GOLDEN / "mr.nii.gz", tmp_path / "sct.nii.gz")

    sct, mr = nib.load(out), nib.load(GOLDEN / "mr.nii.gz")
    voxels = np.asanyarray(sct.dataobj)
    assert voxels.dtype == np.int16 and voxels.shape == mr.shape
    np.testing.assert_array_equal(sct.affine, mr.affine)
    assert hashlib.sha256(voxels.tobytes()).hexdigest() == SCT_SHA256
