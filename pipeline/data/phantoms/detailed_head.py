"""Detailed paired MR/CT head phantoms: hard in the ways real scans are hard (the quality benchmark's default).

One subject (:func:`make_detailed_subject`) is one anatomy, one CT and one MR per MR family:

- anatomy: :func:`~pipeline.data.phantoms.anatomy.paint_head` (scalp, skull with diploe, brain, ventricles,
  orbits, sinuses, petrous ridges) with per-subject size (global scale 0.92-1.08 and separate semi-axes),
  pose (rotation up to 12 degrees) and a smooth elastic warp (2-4 mm SD); then the temporal bones, ethmoid
  cells, nose and mucosa (:mod:`pipeline.data.phantoms.skull_base`) and the jaw, teeth, pharynx and C1-C3
  (:mod:`pipeline.data.phantoms.jaw_neck`); 15 tissues (:class:`~pipeline.data.phantoms.head_tissues.HeadTissue`)
  with a one-voxel partial-volume ramp;
- CT (int16 HU): per-subject HU offsets, spatially varying density (bone, marrow, teeth) and texture
  (brain, fat, muscle), a point spread, correlated noise of 10-20 HU SD; -1000 HU outside the body;
- MR (float32): per family (:data:`~pipeline.data.phantoms.mr_acquisition.FAMILIES`), a scanner drawn per
  subject, the subject's own relaxation times, point spread, bias field, coil fall-off, Rician noise, and
  a sub-millimetre rigid + elastic misregistration to the CT (:mod:`pipeline.data.phantoms.mr_acquisition`);
  each family's MR depends only on the seed and the family, not on which other families are made;
- mask (uint8): the body (air cavities included).

Grid: anisotropy-free 1 mm by default (``SIZES``: 184 x 216 x 208 mm from the vertex to below the teeth),
oblique and LPS-like (non-RAS) like the simple phantoms. Files (:func:`write_detailed_dataset`):
``OUT/1BD001/{ct,mask,mr}.nii.gz`` with ``mr`` the first family, ``mr_<family>.nii.gz`` the others, and
``phantom.json`` (the scanner, misregistration and anatomy drawn for that subject).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.data.phantoms.anatomy import paint_head, smooth_noise
from pipeline.data.phantoms.dataset import phantom_grid, rotation_matrix, write_subjects
from pipeline.data.phantoms.head_tissues import HEAD_TISSUES, N_HEAD_TISSUES, SUBJECT_JITTER, HeadTissue
from pipeline.data.phantoms.jaw_neck import paint_jaw_and_neck
from pipeline.data.phantoms.mr_acquisition import (
    FAMILIES,
    acquire_mr,
    draw_misregistration,
    draw_protocol,
    draw_tissue_jitter,
    misregistration_coordinates,
    resample_at,
)
from pipeline.data.phantoms.skull_base import line_air_spaces, paint_ethmoid_and_nose, paint_temporal_bones
from pipeline.io.atomic import atomic_write
from pipeline.io.volumes import write_nifti
from transforms.hu import HU_AIR, HU_MIN

__all__ = ["DEFAULT_FAMILIES", "FOV_MM", "SIZES", "DetailedSubject", "detailed_subject_id", "make_detailed_subject",
           "mr_file_name", "save_detailed_montage", "write_detailed_dataset"]

FOV_MM = np.array([184.0, 216.0, 208.0])
#: Grid presets over :data:`FOV_MM`: shape (voxels) and spacing (mm).
SIZES: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "1mm": ((184, 216, 208), (1.0, 1.0, 1.0)),
    "2mm": ((92, 108, 104), (2.0, 2.0, 2.0)),
    "tiny": ((46, 54, 52), (4.0, 4.0, 4.0)),
}
DEFAULT_FAMILIES = ("spgr", "mprage")
SUBJECT_ID_PREFIX = "1BD"  # SynthRAD2023-style: task 1, brain, centre D (detailed phantom)
HU_STORE_MAX = 3071.0
T = HeadTissue
#: Texture fields shared by CT and MR: tissue -> (field name, relative MR amplitude). Denser trabecular bone
#: holds less fatty marrow, so its MR signal falls where its HU rises (negative amplitude).
TEXTURES = {T.GREY_MATTER: ("texture", 0.03), T.WHITE_MATTER: ("texture", 0.03), T.FAT: ("soft", 0.03),
            T.MUSCLE: ("soft", 0.04), T.SOFT_TISSUE: ("soft", 0.03), T.MUCOSA: ("soft", 0.05),
            T.DIPLOE: ("diploe", -0.12), T.MARROW: ("diploe", -0.12)}
CT_FIELDS = {T.CORTICAL_BONE: "cortical", T.ENAMEL: "cortical", T.DENTINE: "cortical", T.DIPLOE: "diploe",
             T.MARROW: "diploe", T.GREY_MATTER: "texture", T.WHITE_MATTER: "texture", T.FAT: "soft",
             T.MUSCLE: "soft", T.SOFT_TISSUE: "soft", T.MUCOSA: "soft", T.CSF: "soft", T.VITREOUS: "soft"}
#: The CT's fields that the MR shows too (:data:`TEXTURES`); the others (the density of cortical bone and teeth,
#: which give no MR signal) and the per-subject HU offsets are invisible to any MR-only model.
MR_VISIBLE_FIELDS = frozenset(name for name, _ in TEXTURES.values())


def detailed_subject_id(index: int) -> str:
    """ID of the ``index``-th subject (0-based): 0 -> ``1BD001``."""
    return f"{SUBJECT_ID_PREFIX}{index + 1:03d}"


def mr_file_name(family: str, families: Sequence[str]) -> str:
    """File of ``family``'s MR in a subject folder: ``mr.nii.gz`` for the first family, else ``mr_<family>.nii.gz``."""
    return "mr.nii.gz" if family == families[0] else f"mr_{family}.nii.gz"


@dataclass
class DetailedSubject:
    """One detailed head. Arrays ``(X, Y, Z)`` on the grid of ``affine`` (4x4, voxel -> world mm)."""

    ct: np.ndarray  # int16 HU
    mask: np.ndarray  # uint8
    affine: np.ndarray
    mr: dict[str, np.ndarray]  # family -> float32 magnitude
    record: dict = field(default_factory=dict)  # what was drawn (JSON-ready)
    tissue_labels: np.ndarray | None = None  # uint8 dominant HeadTissue per voxel (return_tissues)
    tissue_fractions: np.ndarray | None = None  # (N_HEAD_TISSUES, X, Y, Z) float32 (return_tissues)
    #: family -> int16 HU (return_floor): the CT without its noise, moved exactly as that family's MR was. The
    #: sCT of a model that read the anatomy perfectly from the MR; its MAE against ``ct`` estimates the error
    #: that the CT's noise and the MR/CT misregistration leave to any MR-only model.
    registration_floor: dict[str, np.ndarray] | None = None
    #: family -> int16 HU (return_floor): the registration floor without what the MR cannot show either, the
    #: density fields outside :data:`MR_VISIBLE_FIELDS` and the per-subject HU offsets at their mean (0, the
    #: L1-best guess): the sCT of a model that read everything the MR shows perfectly.
    visible_floor: dict[str, np.ndarray] | None = None


def make_detailed_subject(*, seed: int, size: str | Sequence[int] = "1mm", families: Sequence[str] = DEFAULT_FAMILIES,
                          return_tissues: bool = False, return_floor: bool = False) -> DetailedSubject:
    """Generate one subject, deterministic in ``seed`` (see the module docstring for what it holds).

    ``size``: a :data:`SIZES` preset or a shape ``(X, Y, Z)`` over :data:`FOV_MM`; ``families``: the MR
    families to image (each from its own random stream, so adding one changes no other); ``return_tissues``:
    keep the tissue labels and fractions; ``return_floor``: keep each family's registration and MR-visible floors
    (:attr:`DetailedSubject.registration_floor`, :attr:`DetailedSubject.visible_floor`). Neither changes what is
    drawn.
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families or len(set(families)) != len(families):
        raise ValueError(f"families must be distinct names from {FAMILIES}, got {tuple(families)}")
    rng = np.random.default_rng(seed)
    shape, spacing = phantom_grid(size, sizes=SIZES, fov_mm=FOV_MM, min_voxels=8, what="detailed head")

    direction = rotation_matrix(rng.uniform(-4.0, 4.0, size=3)) @ np.diag([-1.0, -1.0, 1.0])  # oblique, LPS-like
    fov_centre = np.array([3.0, -14.0, 22.0]) + rng.uniform(-5.0, 5.0, size=3)
    linear = direction @ np.diag(spacing)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = fov_centre - linear @ ((np.asarray(shape) - 1) / 2.0)

    angles = [rng.uniform(-12, 12), rng.uniform(-8, 8), rng.uniform(-10, 10)]
    head_rot = rotation_matrix(angles)
    head_centre = fov_centre + np.array([rng.uniform(-5, 5), rng.uniform(-5, 5), 6.0 + rng.uniform(-3, 3)])
    scale = rng.uniform(0.92, 1.08)
    head_semi = (rng.uniform(72.0, 82.0), rng.uniform(84.0, 94.0), rng.uniform(88.0, 96.0), rng.uniform(145.0, 170.0))
    warp_mm = rng.uniform(2.0, 4.0)
    to_frame = head_rot.T @ linear / scale
    offset = head_rot.T @ (affine[:3, 3] - head_centre) / scale
    ijk = np.ogrid[: shape[0], : shape[1], : shape[2]]
    q = tuple((sum(float(to_frame[c, a]) * ijk[a] for a in range(3)) + offset[c]).astype(np.float32)
              + warp_mm * smooth_noise(rng, shape, spacing, 45.0) for c in range(3))

    fractions, fields, layout = paint_head(rng, q, spacing, head_semi, n_channels=N_HEAD_TISSUES, return_layout=True)
    ear = paint_temporal_bones(rng, layout)
    paint_jaw_and_neck(rng, layout, ear)
    paint_ethmoid_and_nose(rng, layout)
    line_air_spaces(rng, layout)
    del layout
    mask = (fractions[T.AIR] < 0.5).astype(np.uint8)
    fields["soft"] = smooth_noise(rng, shape, spacing, 4.0)
    jitter = draw_tissue_jitter(rng)
    ct, ct_record, noise_free_ct, visible_ct = _image_ct(rng, fractions, fields, mask, visible=return_floor)

    record = {"seed": int(seed), "shape": list(shape), "spacing_mm": [float(s) for s in spacing],
              "head": {"rotation_deg": [float(a) for a in angles], "scale": float(scale),
                       "semi_axes_mm": [float(a) for a in head_semi], "warp_sd_mm": float(warp_mm)},
              "ct": ct_record, "mr": {}}
    textures = {t: (fields[name], amplitude) for t, (name, amplitude) in TEXTURES.items()}
    mrs, floor, visible_floor = {}, {}, {}
    for family in families:
        family_rng = np.random.default_rng([seed, 1 + FAMILIES.index(family)])
        protocol = draw_protocol(family_rng, family)
        image = acquire_mr(family_rng, fractions, protocol, spacing=spacing, qz=q[2], jitter=jitter, textures=textures)
        mis = draw_misregistration(family_rng)
        coords, displacement = misregistration_coordinates(family_rng, shape, affine, head_centre, mis)
        mrs[family] = resample_at(image, coords)
        if return_floor:
            floor[family] = _store_hu(resample_at(noise_free_ct, coords))
            visible_floor[family] = _store_hu(resample_at(visible_ct, coords))
        body = displacement[mask > 0]
        record["mr"][family] = {**protocol.as_dict(), "misregistration": {
            **mis.as_dict(), "rms_mm": float(np.sqrt(np.mean(body**2))), "max_mm": float(body.max())}}
    subject = DetailedSubject(ct=ct, mask=mask, affine=affine, mr=mrs, record=record,
                              registration_floor=floor if return_floor else None,
                              visible_floor=visible_floor if return_floor else None)
    if return_tissues:
        subject.tissue_labels = np.argmax(fractions, axis=0).astype(np.uint8)
        subject.tissue_fractions = fractions
    return subject


def _tissue_mix_hu(hu: np.ndarray, fractions: np.ndarray, fields: dict[str, np.ndarray], *,
                   field_names: frozenset[str] | None = None) -> np.ndarray:
    """HU of the tissue mix (float32): per-tissue ``hu`` plus the density fields of :data:`CT_FIELDS` (those named
    in ``field_names`` only, when given)."""
    ct = np.tensordot(hu.astype(np.float32), fractions, axes=1)
    for tissue, name in CT_FIELDS.items():
        if field_names is None or name in field_names:
            ct += fractions[tissue] * (np.float32(HEAD_TISSUES[tissue].hu_sd_spatial) * fields[name])
    return ct


def _image_ct(rng: np.random.Generator, fractions: np.ndarray, fields: dict[str, np.ndarray],
              mask: np.ndarray, *, visible: bool = False) -> tuple[np.ndarray, dict, np.ndarray, np.ndarray | None]:
    """CT in HU (int16), what was drawn (tissue mix with per-subject offsets, density and texture fields, point
    spread, correlated noise of 10-20 HU SD, -1000 HU outside the body), the same CT without its noise (float32,
    for the registration floor) and, with ``visible``, that without the offsets and the fields the MR does not
    show (float32, for the MR-visible floor; otherwise None)."""
    nominal = np.array([HEAD_TISSUES[t].hu for t in HeadTissue])
    offsets = rng.normal(0.0, SUBJECT_JITTER["hu"], size=len(HeadTissue))
    offsets[[T.AIR, T.SINUS_AIR]] = 0.0
    ct = _tissue_mix_hu(nominal + offsets, fractions, fields)
    psf_voxels, noise_sd, grain = rng.uniform(0.35, 0.6), rng.uniform(10.0, 20.0), rng.uniform(0.6, 1.0)
    ct = ndimage.gaussian_filter(ct, psf_voxels)
    noise_free = np.where(mask > 0, ct, np.float32(HU_AIR)).astype(np.float32)
    seen = None
    if visible:
        seen = ndimage.gaussian_filter(_tissue_mix_hu(nominal, fractions, fields, field_names=MR_VISIBLE_FIELDS),
                                       psf_voxels)
        seen = np.where(mask > 0, seen, np.float32(HU_AIR)).astype(np.float32)
    noise = ndimage.gaussian_filter(rng.standard_normal(ct.shape, dtype=np.float32), grain)
    ct += noise * np.float32(noise_sd / max(float(noise.std()), 1e-6))
    ct[mask == 0] = HU_AIR
    record = {"psf_sigma_voxels": float(psf_voxels), "noise_sd_hu": float(noise_sd), "noise_grain_voxels": float(grain)}
    return _store_hu(ct), record, noise_free, seen


def _store_hu(ct: np.ndarray) -> np.ndarray:
    """HU as stored: rounded, clipped to [HU_MIN, 3071], int16."""
    return np.rint(np.clip(ct, HU_MIN, HU_STORE_MAX)).astype(np.int16)


def write_detailed_dataset(out_dir: str | os.PathLike, *, n: int, seed: int = 0, size: str | Sequence[int] = "1mm",
                           families: Sequence[str] = DEFAULT_FAMILIES, overwrite: bool = False,
                           progress: bool = False, first_id: int = 1, workers: int = 1) -> list[Path]:
    """Write ``n`` subjects as ``out_dir/<ID>/`` (``ct``, ``mask``, one MR per family, ``phantom.json``).

    Subject ``i`` uses a seed derived from ``(seed, i)``, so a subject is the same whatever ``n`` or ``workers``
    (processes making subjects side by side, :func:`pipeline.data.phantoms.dataset.write_subjects`; ``first_id``
    numbers the first ID, e.g. 901 for a held-out set); existing
    subject folders are refused (``FileExistsError``) before anything is written unless ``overwrite``.
    """
    write = partial(_write_subject, size=size, families=tuple(families))
    return write_subjects(out_dir, n=n, seed=seed, subject_id=detailed_subject_id, write_subject=write,
                          overwrite=overwrite, progress=progress, desc="detailed heads", first_id=first_id,
                          workers=workers)


def _write_subject(folder: Path, subject_seed: int, *, size: str | Sequence[int], families: tuple[str, ...]) -> None:
    subject = make_detailed_subject(seed=subject_seed, size=size, families=families)
    write_nifti(subject.ct, subject.affine, folder / "ct.nii.gz", overwrite=True)
    write_nifti(subject.mask, subject.affine, folder / "mask.nii.gz", overwrite=True)
    for family, image in subject.mr.items():
        write_nifti(image, subject.affine, folder / mr_file_name(family, families), overwrite=True)
    record = {"families": {f: mr_file_name(f, families) for f in families}, **subject.record}
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(folder / "phantom.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=True)


def save_detailed_montage(subject_dirs: Sequence[str | os.PathLike], path: str | os.PathLike, *,
                          max_subjects: int = 4, ct_window_hu: tuple[float, float] = (-1000.0, 2000.0)) -> Path:
    """PNG montage, one row per subject (at most ``max_subjects``): MR of each family | CT, on the axial slice
    with the most air inside the body (sinuses, nose, pharynx), then on the mid-sagittal slice.

    Slices of the closest canonical (RAS) orientation: axial anterior up with the patient's right on the
    image right; sagittal anterior right, superior up.
    """
    import nibabel as nib

    from pipeline.report.figures import save_image_grid

    dirs = [Path(d) for d in subject_dirs][:max_subjects]
    if not dirs:
        raise ValueError("save_detailed_montage needs at least one subject folder")
    files = json.loads((dirs[0] / "phantom.json").read_text(encoding="utf-8"))["families"]
    rows = []
    for folder in dirs:
        read = lambda name: np.asanyarray(nib.as_closest_canonical(nib.load(folder / name)).dataobj)  # noqa: E731
        ct, mask = read("ct.nii.gz"), read("mask.nii.gz")
        z = int(np.argmax(((ct < -400) & (mask > 0)).sum(axis=(0, 1))))
        x = ct.shape[0] // 2
        axial, sagittal = [], []
        for column in [*files, "CT"]:
            volume = ct if column == "CT" else read(files[column])
            window = ct_window_hu if column == "CT" else (0.0, float(np.percentile(volume, 99.5)))
            # transposed and flipped: anterior (axial) / superior (sagittal) at the top of the panel
            axial.append((volume[:, :, z].T[::-1], f"{folder.name} {column} axial {z}", window))
            sagittal.append((volume[x].T[::-1], f"{folder.name} {column} sagittal", window))
        rows.append(axial + sagittal)
    return save_image_grid(rows, path, overwrite=True)  # the montage is regenerated with its data
