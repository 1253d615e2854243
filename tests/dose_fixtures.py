"""A tiny CT/MR/mask subject with a bone wall, shared by the dose tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def write_subject(root: Path, sid: str, *, affine=None) -> dict:
    affine = np.diag([-4.0, -4.0, 4.0, 1.0]) if affine is None else affine
    hu = np.full((30, 30, 20), -1000, np.int16)
    hu[4:26, 4:26, 2:18] = 20
    hu[4:26, 4:6, 2:18] = 900  # a bone wall: a bulk-density sCT misses it
    folder = root / sid
    folder.mkdir(parents=True)
    for name, array in (("ct", hu), ("mr", (hu + 1000).astype(np.int16)), ("mask", (hu > -500).astype(np.uint8))):
        nib.save(nib.Nifti1Image(array, affine), str(folder / f"{name}.nii.gz"))
    return {"subject_id": sid, **{k: str(folder / f"{k}.nii.gz") for k in ("ct", "mr", "mask")}}
