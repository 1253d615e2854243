"""Chest phantom files and figure: ``OUT/<ID>/{ct,tumours}.nii.gz`` + ``tumours.json``, and a PNG montage.

Subjects come from :func:`pipeline.data.phantoms.chest.make_chest_subject`; every file is written to a
temporary name and moved into place with ``os.replace`` (``pipeline.writers.atomic_path``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.data.phantoms.chest import make_chest_subject, subject_id
from pipeline.data.phantoms.dataset import write_subjects
from pipeline.io.atomic import atomic_write
from pipeline.io.volumes import write_nifti


def write_chest_dataset(out_dir: str | os.PathLike, *, n: int, seed: int = 0,
                        size: str | tuple[int, int, int] = "default", contrast: str | None = None,
                        rib_density: tuple[float, float] | None = None,
                        extra_tumours: tuple[int, int] | None = None, overwrite: bool = False,
                        progress: bool = False, first_id: int = 1, workers: int = 1) -> list[Path]:
    """Write ``n`` subjects as ``out_dir/<ID>/{ct,tumours}.nii.gz`` + ``tumours.json``; return the folders.

    ``ct`` int16 HU, ``tumours`` uint8 labels (0 background, k = tumour k) on the CT grid,
    ``tumours.json`` = {"params": ..., "tumours": [{label, centre_mm (RAS), diameter_mm, behind_rib_ap}]}.
    Subject ``i`` uses a seed derived from ``(seed, i)`` (the same subject whatever ``n`` or ``workers``, the
    processes that make subjects side by side; ``first_id`` numbers the first ID, e.g. 901 for a held-out set);
    ``contrast`` forces
    every subject's contrast phase (``make_chest_subject``; None: drawn, the anatomy is the same either way) and
    ``rib_density`` ``(low, high)`` scales each subject's ribs by a factor drawn from that range and
    ``extra_tumours`` ``(low, high)`` adds that many tumours behind ribs (``make_chest_subject``). Raises
    ``FileExistsError`` before writing anything if a subject folder exists and not ``overwrite``.
    """
    write = partial(_write_subject, size=size, contrast=contrast, rib_density=rib_density,
                    extra_tumours=extra_tumours)
    return write_subjects(out_dir, n=n, seed=seed, subject_id=subject_id, write_subject=write, overwrite=overwrite,
                          progress=progress, desc="chest phantoms", first_id=first_id, workers=workers)


def _write_subject(folder: Path, subject_seed: int, *, size: str | tuple[int, int, int], contrast: str | None,
                   rib_density: tuple[float, float] | None, extra_tumours: tuple[int, int] | None) -> None:
    """One subject of :func:`write_chest_dataset` into its (existing) ``folder``."""
    subject = make_chest_subject(seed=subject_seed, size=size, contrast=contrast, rib_density=rib_density,
                                 extra_tumours=extra_tumours)
    # overwrite=True per file: the folder-level overwrite was checked before any subject was made
    write_nifti(subject.ct, subject.affine, folder / "ct.nii.gz", overwrite=True)
    write_nifti(subject.tumour_labels, subject.affine, folder / "tumours.nii.gz", overwrite=True)
    info = {"params": subject.params, "tumours": [asdict(t) for t in subject.tumours]}
    atomic_write(folder / "tumours.json", lambda p: p.write_text(json.dumps(info, indent=1)), overwrite=True)


def save_chest_montage(subject_dirs: Sequence[str | os.PathLike], path: str | os.PathLike, *,
                       max_subjects: int = 4, window_hu: tuple[float, float] = (-1000.0, 1000.0)) -> Path:
    """PNG: one row per subject: coronal and axial slices through tumour 1 and a parallel AP
    projection of attenuation (mean of HU + 1000 along A-P), tumour outlines in red. Radiological
    display: the patient's right on the viewer's left, superior / anterior up."""
    from matplotlib.figure import Figure

    from pipeline.report.figures import save_png

    dirs = [Path(d) for d in subject_dirs][:max_subjects]
    if not dirs:
        raise ValueError("save_chest_montage needs at least one subject folder")
    fig = Figure(figsize=(10.5, 3.2 * len(dirs)))
    axes = fig.subplots(len(dirs), 3, squeeze=False)
    for row, folder in zip(axes, dirs):
        ct_img = nib.as_closest_canonical(nib.load(folder / "ct.nii.gz"))
        ct = np.asarray(ct_img.dataobj, dtype=np.float32)  # (X: ->R, Y: ->A, Z: ->S)
        lab = np.asarray(nib.as_closest_canonical(nib.load(folder / "tumours.nii.gz")).dataobj)
        zoom = ct_img.header.get_zooms()[:3]
        i, j, k = (np.argwhere(lab == 1).mean(axis=0).astype(int) if (lab == 1).any()
                   else np.array(ct.shape) // 2)
        # (image (rows, cols) with rows inferior->superior / posterior->anterior and cols R->L, outline, aspect)
        panels = [(ct[::-1, j, :].T, lab[::-1, j, :].T > 0, zoom[2] / zoom[0], window_hu, "coronal"),
                  (ct[::-1, :, k].T, lab[::-1, :, k].T > 0, zoom[1] / zoom[0], window_hu, "axial"),
                  ((ct + 1000.0).clip(0).mean(axis=1)[::-1].T, lab.any(axis=1)[::-1].T, zoom[2] / zoom[0],
                   None, "AP projection")]
        for ax, (image, outline, aspect, window, title) in zip(row, panels):
            lo, hi = window if window else np.percentile(image, [1, 99.5])
            ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect)
            if outline.any():
                ax.contour(outline.astype(float), levels=[0.5], colors="r", linewidths=0.7, origin="lower")
            ax.set_title(f"{folder.name} {title}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return save_png(fig, path, overwrite=True, dpi=90)  # regenerated with its data
