"""The lungs of a chest CT: where a radiograph's lung fields are (:mod:`pipeline.xray.drr_dataset` projects the
mask into a lung path length per pixel; the evaluation's lung-field bone leak uses it)."""

from __future__ import annotations

import numpy as np
import torch

from transforms.mask import fill_holes_slice_by_slice, largest_component

__all__ = ["LUNG_HU", "lung_mask"]

#: Lung parenchyma (HU): aerated lung lies between the air of the airways and outside (-1000) and soft tissue.
LUNG_HU: tuple[float, float] = (-950.0, -400.0)


def lung_mask(hu: np.ndarray | torch.Tensor, affine: np.ndarray, *, lung_hu: tuple[float, float] = LUNG_HU,
              body_hu: float = -400.0) -> np.ndarray:
    """Lung parenchyma of a CT ``(X, Y, Z)`` in HU: voxels within ``lung_hu`` inside the body, bool ``(X, Y, Z)``.

    The body is the largest connected region above ``body_hu`` with its holes filled slice by slice along
    the voxel axis closest to the patient's superior axis (``affine``: voxel -> world mm): in 3-D the lungs
    reach the volume's edge through the trachea and would not count as holes. Why: the lung fields of a
    radiograph (where a tumour hides behind ribs) are where rays cross lung, and a CT's table pad or
    blankets can reach lung-like HU outside the body."""
    values = hu.detach().cpu().numpy() if isinstance(hu, torch.Tensor) else np.asarray(hu)
    if values.ndim != 3:
        raise ValueError(f"expected a 3-D HU volume (X, Y, Z), got shape {values.shape}")
    axial = int(np.argmax(np.abs(np.asarray(affine, np.float64)[2, :3])))
    body = fill_holes_slice_by_slice(largest_component(values > body_hu), axial)
    lo, hi = lung_hu
    return body & (values >= lo) & (values <= hi)
