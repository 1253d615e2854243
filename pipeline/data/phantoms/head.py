"""Paired MR/CT head phantoms in the SynthRAD2023 layout (the project's embedded default dataset).

``make_phantom_subject`` builds one head (anatomy from :mod:`pipeline.data.phantoms.anatomy`), then images it:

- CT (int16, HU): per-tissue HU (:data:`pipeline.data.phantoms.anatomy.TISSUES`), spatially varying bone
  density, partial-volume ramp plus a small PSF blur, correlated noise (~12 HU SD); exactly -1000 HU
  outside the head.
- MR (float32, arbitrary units): T1-weighted spoiled gradient echo from PD / T1 / T2*, so cortical
  bone and air are both dark, fat is brightest, WM > GM > CSF; smooth multiplicative bias field,
  Rician noise, arbitrary per-subject intensity scale.
- mask (uint8): 1 inside the skin (air cavities included).

All three share one grid: anisotropic voxels and a slightly oblique LPS-like (non-RAS) affine, so that
geometry bugs downstream show up. ``write_phantom_dataset`` writes ``OUT/1BP001/{mr,ct,mask}.nii.gz``...
(task 1, brain, centre P = phantom) atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from pipeline.data.phantoms.anatomy import TISSUES, Tissue, paint_head, smooth_noise
from pipeline.data.phantoms.dataset import phantom_grid, rotation_matrix, write_subjects
from pipeline.io.volumes import write_nifti
from transforms.hu import HU_AIR, HU_MIN

#: Grid presets: shape (voxels) and spacing (mm). Both cover a 224 x 224 x 180 mm field of view.
SIZES: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "default": ((112, 112, 72), (2.0, 2.0, 2.5)),
    "tiny": ((56, 56, 36), (4.0, 4.0, 5.0)),
}
FOV_MM = np.array([224.0, 224.0, 180.0])

#: T1-weighted 3D spoiled gradient echo (FLASH/SPGR) parameters; the flip angle is jittered per subject.
MR_SEQUENCE = {"tr_ms": 20.0, "te_ms": 4.0, "flip_deg": 25.0}
CT_NOISE_SD_HU = 12.0
MR_NOISE_SD_REL_FAT = 0.012  # Rician sigma relative to the fat signal (WM SNR ~ 30)
HU_STORE_MAX = 3071.0  # int16 CT as scanners store it

SUBJECT_ID_PREFIX = "1BP"  # SynthRAD2023: task 1, brain, centre P (phantom)


@dataclass
class PhantomSubject:
    """One phantom head. Arrays are ``(X, Y, Z)`` on the grid of ``affine`` (4x4, voxel -> mm).

    ``tissue_labels`` (uint8, :class:`Tissue` values, dominant tissue per voxel) and ``tissue_fractions``
    (``(len(Tissue), X, Y, Z)`` float32) are only filled with ``return_tissues=True``.
    """

    mr: np.ndarray  # float32, arbitrary units
    ct: np.ndarray  # int16, HU
    mask: np.ndarray  # uint8, 1 inside the head
    affine: np.ndarray  # float64 (4, 4)
    tissue_labels: np.ndarray | None = None
    tissue_fractions: np.ndarray | None = None


def subject_id(index: int) -> str:
    """SynthRAD2023-style ID of the ``index``-th subject (0-based): 0 -> ``1BP001``."""
    return f"{SUBJECT_ID_PREFIX}{index + 1:03d}"


def _spgr_signal(props, *, flip_rad: float) -> float:
    """Steady-state spoiled gradient-echo signal: PD sin(a)(1 - E1)/(1 - cos(a) E1) exp(-TE/T2*)."""
    e1 = np.exp(-MR_SEQUENCE["tr_ms"] / props.t1_ms)
    t2s = np.exp(-MR_SEQUENCE["te_ms"] / props.t2star_ms)
    return float(props.proton_density * np.sin(flip_rad) * (1 - e1) / (1 - np.cos(flip_rad) * e1) * t2s)


def make_phantom_subject(
    *, seed: int, size: str | tuple[int, int, int] = "default", return_tissues: bool = False
) -> PhantomSubject:
    """Generate one paired MR/CT/mask head phantom, deterministic in ``seed``.

    Args:
        seed: random seed; the same seed gives byte-identical arrays.
        size: ``"default"`` (112 x 112 x 72 at 2 x 2 x 2.5 mm), ``"tiny"`` (56 x 56 x 36 at
            4 x 4 x 5 mm, for tests), or a shape ``(X, Y, Z)`` covering the same 224 x 224 x 180 mm FOV.
        return_tissues: also return the tissue label map and fractions (not written to disk).
    """
    rng = np.random.default_rng(seed)
    shape, spacing = phantom_grid(size, sizes=SIZES, fov_mm=FOV_MM, min_voxels=8)

    # Grid: LPS-like axis flips (i -> L, j -> P, k -> S) plus a few degrees of obliquity.
    direction = rotation_matrix(rng.uniform(-4.0, 4.0, size=3)) @ np.diag([-1.0, -1.0, 1.0])
    fov_centre = np.array([3.0, -14.0, 22.0]) + rng.uniform(-5.0, 5.0, size=3)
    linear = direction @ np.diag(spacing)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = fov_centre - linear @ ((np.asarray(shape) - 1) / 2.0)

    # Head pose in the world (RAS mm) and size: frame coordinates q = R^T (world - centre) + deformation.
    head_rot = rotation_matrix([rng.uniform(-10, 10), rng.uniform(-6, 6), rng.uniform(-8, 8)])
    head_centre = fov_centre + np.array([rng.uniform(-4, 4), rng.uniform(-4, 4), -18.0 + rng.uniform(-3, 3)])
    head_semi = (rng.uniform(74.0, 82.0), rng.uniform(85.0, 93.0), rng.uniform(90.0, 97.0), rng.uniform(120.0, 135.0))
    to_frame = head_rot.T @ linear
    offset = head_rot.T @ (affine[:3, 3] - head_centre)
    ijk = np.ogrid[: shape[0], : shape[1], : shape[2]]
    q = tuple(
        (sum(float(to_frame[c, a]) * ijk[a] for a in range(3)) + offset[c]).astype(np.float32)
        + 3.0 * smooth_noise(rng, shape, spacing, 45.0)  # smooth deformation, ~3 mm SD
        for c in range(3)
    )
    fractions, fields = paint_head(rng, q, spacing, head_semi)
    mask = (fractions[Tissue.AIR] < 0.5).astype(np.uint8)

    ct = _image_ct(rng, fractions, fields, mask)
    mr = _image_mr(rng, fractions, fields, spacing)
    subject = PhantomSubject(mr=mr, ct=ct, mask=mask, affine=affine)
    if return_tissues:
        subject.tissue_labels = np.argmax(fractions, axis=0).astype(np.uint8)
        subject.tissue_fractions = fractions
    return subject


def _image_ct(rng: np.random.Generator, fractions: np.ndarray, fields: dict, mask: np.ndarray) -> np.ndarray:
    """CT in HU (int16): tissue mix, spatially varying bone density, PSF blur, correlated noise."""
    hu = np.array([TISSUES[t].hu for t in Tissue], dtype=np.float32)
    ct = np.tensordot(hu, fractions, axes=1)
    # Bone density varies smoothly in space (not visible in MR: part of the irreducible error).
    for tissue, field, sd_hu in ((Tissue.CORTICAL_BONE, "cortical", 200.0), (Tissue.DIPLOE, "diploe", 110.0)):
        props = TISSUES[tissue]
        local = np.clip(props.hu + sd_hu * fields[field], *props.hu_range)
        ct += fractions[tissue] * (local - props.hu)
    ct += (fractions[Tissue.GREY_MATTER] + fractions[Tissue.WHITE_MATTER]) * 2.5 * fields["texture"]
    ct = ndimage.gaussian_filter(ct, 0.35)  # scanner PSF on top of the partial-volume ramp
    noise = ndimage.gaussian_filter(rng.standard_normal(ct.shape).astype(np.float32), 0.7)
    ct += noise * (CT_NOISE_SD_HU / max(float(noise.std()), 1e-6))
    ct[mask == 0] = HU_AIR
    return np.rint(np.clip(ct, HU_MIN, HU_STORE_MAX)).astype(np.int16)


def _image_mr(rng: np.random.Generator, fractions: np.ndarray, fields: dict, spacing: np.ndarray) -> np.ndarray:
    """T1-weighted SPGR magnitude (float32): tissue signal mix, bias field, Rician noise, random scale."""
    flip = np.deg2rad(MR_SEQUENCE["flip_deg"] + rng.uniform(-3.0, 3.0))
    signal = np.array([_spgr_signal(TISSUES[t], flip_rad=flip) for t in Tissue], dtype=np.float32)
    signal /= signal[Tissue.FAT]
    mr = np.tensordot(signal, fractions, axes=1)
    gm, wm = Tissue.GREY_MATTER, Tissue.WHITE_MATTER
    brain = fractions[gm] * signal[gm] + fractions[wm] * signal[wm]
    mr += brain * 0.03 * fields["texture"]
    mr = ndimage.gaussian_filter(mr, 0.35)
    mr *= np.exp(0.12 * smooth_noise(rng, mr.shape, spacing, 90.0))  # receive-coil bias field
    noise = rng.standard_normal((2, *mr.shape)).astype(np.float32) * MR_NOISE_SD_REL_FAT
    mr = np.sqrt((mr + noise[0]) ** 2 + noise[1] ** 2)  # magnitude of complex Gaussian noise -> Rician
    return (mr * rng.uniform(300.0, 3000.0)).astype(np.float32)


def write_phantom_dataset(
    out_dir: str | os.PathLike,
    *,
    n: int,
    seed: int = 0,
    size: str | tuple[int, int, int] = "default",
    overwrite: bool = False,
    progress: bool = False,
    first_id: int = 1,
    workers: int = 1,
) -> list[Path]:
    """Write ``n`` subjects as ``out_dir/<ID>/{mr,ct,mask}.nii.gz`` and return the subject folders.

    Subject ``i`` uses a seed derived from ``(seed, i)``, so subject 1BP003 is the same whatever ``n`` or
    ``workers`` (processes making subjects side by side, :func:`pipeline.data.phantoms.dataset.write_subjects`);
    ``first_id`` numbers the first ID (``first_id=901``: 1BP901, with subject 0's anatomy).
    Raises ``FileExistsError`` (before writing anything) if a subject folder exists and not ``overwrite``.
    """
    return write_subjects(out_dir, n=n, seed=seed, subject_id=subject_id, write_subject=partial(_write_subject, size=size),
                          overwrite=overwrite, progress=progress, desc="phantoms", first_id=first_id, workers=workers)


def _write_subject(folder: Path, subject_seed: int, *, size: str | tuple[int, int, int]) -> None:
    subject = make_phantom_subject(seed=subject_seed, size=size)
    for name, array in (("mr", subject.mr), ("ct", subject.ct), ("mask", subject.mask)):
        # overwrite=True per file: the folder-level overwrite was checked before any subject was made
        write_nifti(array, subject.affine, folder / f"{name}.nii.gz", overwrite=True)


def save_montage(
    subject_dirs: Sequence[str | os.PathLike],
    path: str | os.PathLike,
    *,
    max_subjects: int = 4,
    ct_window_hu: tuple[float, float] = (-200.0, 1500.0),
) -> Path:
    """PNG montage: one row per subject (at most ``max_subjects``), columns MR | CT | mask.

    Shows the axial centre slice after reorienting to the closest canonical (RAS) orientation, so
    anterior is up and the patient's right is on the image right (neurological view).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = [Path(d) for d in subject_dirs][:max_subjects]
    if not dirs:
        raise ValueError("save_montage needs at least one subject folder")
    fig, axes = plt.subplots(len(dirs), 3, figsize=(9, 3 * len(dirs)), squeeze=False)
    for row, folder in zip(axes, dirs):
        for ax, name in zip(row, ("mr", "ct", "mask")):
            img = nib.as_closest_canonical(nib.load(folder / f"{name}.nii.gz"))
            vol = np.asanyarray(img.dataobj)
            sl = vol[:, :, vol.shape[2] // 2].T  # rows = A-P (y), columns = R-L (x)
            zooms = img.header.get_zooms()
            kw = {"origin": "lower", "cmap": "gray", "aspect": zooms[1] / zooms[0]}
            if name == "mr":
                ax.imshow(sl, vmin=0, vmax=float(np.percentile(vol, 99.5)), **kw)
                title = "MR (T1w)"
            elif name == "ct":
                ax.imshow(sl, vmin=ct_window_hu[0], vmax=ct_window_hu[1], **kw)
                title = f"CT [{ct_window_hu[0]:.0f}, {ct_window_hu[1]:.0f}] HU"
            else:
                ax.imshow(sl, vmin=0, vmax=1, **kw)
                title = "mask"
            ax.set_title(f"{folder.name} {title}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    from pipeline.report.figures import save_png

    try:
        return save_png(fig, path, overwrite=True, dpi=100)  # the montage is regenerated with its data
    finally:
        plt.close(fig)
