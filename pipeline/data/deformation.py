"""Smooth random deformations of a CT: breathing-like variants of one real chest CT for augmentation.

The one real chest CT stays a test case; deformed copies of it add anatomical variation to training
without a second patient. A variant is the CT resampled through a displacement field ``d`` (mm, in the
affine's world RAS axes: +y anterior, +z superior) that is the sum of

- a **low-frequency random field**: a cubic B-spline with control points every ``control_spacing_mm``
  and random (normal) coefficient vectors, scaled so that its largest displacement in the volume is
  ``max_displacement_mm`` (the field is sampled on a grid and interpolated trilinearly, so the largest
  value on the grid is the largest anywhere);
- **breathing** relative to the scanned state, ``b`` uniform in [-1, 1] (-1: deeper expiration, +1:
  deeper inspiration): the lungs stretch cranio-caudally from their apex (the diaphragm, and the abdomen
  below it, move by ``-b * breathing_mm`` along z) and antero-posteriorly from their posterior edge (the
  anterior chest wall moves by ``b * ap_ratio * breathing_mm`` along y). Each is a linear ramp over the
  lungs' extent, i.e. a scaling of the lungs; ``|d_breathing| <= breathing_mm * hypot(1, ap_ratio)``.

Every voxel therefore moves at most :func:`displacement_bound_mm` (defaults: 3 + 5 x 1.118 = 8.6 mm).
The lungs are found from the CT itself (:func:`lung_box`); a CT without lungs gets the random field only.

Resampling: ``out(p) = in(p - d(p))`` with trilinear interpolation (the backward warp with the forward
field; for fields this smooth the difference from the exact inverse is ``|d| |grad d|``, well under a
voxel). HU stay inside the input's range and are stored as int16 on the input's grid (same shape, affine, qform/sform);
samples beyond the grid take the nearest edge voxel, which is air at the sides of a CT and continues
the scan's cut ends instead of inventing a slab of air there.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.data.phantoms.dataset import subject_folders
from pipeline.errors import InputError
from pipeline.io.atomic import atomic_write
from pipeline.io.volumes import read_volume, write_like_reference

logger = logging.getLogger(__name__)

__all__ = ["DeformationConfig", "LungBox", "deform_ct", "deformed_variants", "displacement_bound_mm",
           "displacement_field", "lung_box", "variant_id", "warp_volume", "write_deformed_variants"]

#: Voxels below this HU inside the body are lung (parenchyma ~ -850 HU, airways -1000 HU).
LUNG_MAX_HU = -400.0
#: Connected air regions smaller than this are not lungs (bowel gas, the stomach bubble), mL.
MIN_LUNG_ML = 100.0


@dataclass(frozen=True)
class DeformationConfig:
    """Sizes of one deformation, mm. ``field_spacing_mm``: the field is computed on a grid this coarse
    and interpolated trilinearly per voxel (it varies over tens of mm, so this loses nothing)."""

    max_displacement_mm: float = 3.0
    control_spacing_mm: float = 60.0
    breathing_mm: float = 5.0
    ap_ratio: float = 0.5
    field_spacing_mm: float = 5.0

    def __post_init__(self) -> None:
        if min(self.max_displacement_mm, self.breathing_mm, self.ap_ratio) < 0:
            raise ValueError(f"displacements and ap_ratio must be >= 0: {self}")
        if self.control_spacing_mm <= 0 or self.field_spacing_mm <= 0:
            raise ValueError(f"control_spacing_mm and field_spacing_mm must be > 0: {self}")


@dataclass(frozen=True)
class LungBox:
    """Extent of the lungs, world mm: ``y`` posterior/anterior edges, ``z`` base (lowest) and apex."""

    y_posterior: float
    y_anterior: float
    z_base: float
    z_apex: float


def displacement_bound_mm(config: DeformationConfig) -> float:
    """Largest displacement any voxel can get with ``config`` (mm)."""
    return config.max_displacement_mm + config.breathing_mm * float(np.hypot(1.0, config.ap_ratio))


def _world(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    """World mm ``(3, N)`` of voxel indices ``(3, N)``."""
    return affine[:3, :3] @ index + affine[:3, 3:4]


def _cranio_caudal_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to world z (the other two span the axial plane)."""
    return int(np.argmax(np.abs(affine[2, :3]) / np.linalg.norm(affine[:3, :3], axis=0)))


def lung_box(hu: np.ndarray, affine: np.ndarray, *, stride: int = 2) -> LungBox | None:
    """The lungs' extent in ``hu`` ``(X, Y, Z)``: air (< -400 HU) regions of at least 100 mL that touch no
    side of the axial plane (the air around the body does), 1st-99th percentile of their world y and z.

    ``stride``: look at every ``stride``-th voxel per axis (an extent needs no full resolution).
    Returns None when the CT has no such region (not a chest).
    """
    sub = np.asarray(hu)[::stride, ::stride, ::stride] < LUNG_MAX_HU
    labels, count = ndimage.label(sub)
    if count == 0:
        return None
    cc = _cranio_caudal_axis(affine)
    outside = set()
    for axis in (a for a in range(3) if a != cc):  # the cut ends of the scan may cut the lungs: not sides
        outside |= set(np.unique(np.take(labels, [0, -1], axis=axis)).tolist())
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) * stride ** 3 / 1000.0
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    keep = [k + 1 for k, n in enumerate(sizes) if n * voxel_ml >= MIN_LUNG_ML and k + 1 not in outside]
    if not keep:
        return None
    index = np.argwhere(np.isin(labels, keep)).T * stride
    world = _world(np.asarray(affine, float), index.astype(float))
    (y0, y1), (z0, z1) = np.percentile(world[1], [1, 99]), np.percentile(world[2], [1, 99])
    return LungBox(y_posterior=float(y0), y_anterior=float(y1), z_base=float(z0), z_apex=float(z1))


def _field_grid(shape: tuple[int, ...], affine: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """``(step (3,) voxels, voxel indices (3, gx, gy, gz))`` of a grid about ``spacing_mm`` apart that
    covers the volume's first and last voxel on every axis."""
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    step = np.maximum(1, np.floor(spacing_mm / voxel)).astype(int)
    counts = [int(np.ceil((n - 1) / s)) + 1 for n, s in zip(shape, step)]
    index = np.stack(np.meshgrid(*[np.arange(c) * s for c, s in zip(counts, step)], indexing="ij"))
    return step, index.astype(float)


def displacement_field(shape: tuple[int, ...], affine: np.ndarray, *, rng: np.random.Generator,
                       config: DeformationConfig = DeformationConfig(), lungs: LungBox | None = None,
                       ) -> tuple[np.ndarray, np.ndarray, dict]:
    """The displacement (module docstring) on a coarse grid of the volume ``shape`` / ``affine``.

    Returns ``(field (3, gx, gy, gz) float32 mm in world x/y/z, step (3,) voxels between grid points,
    params {"breathing_state": b, ...})``; grid point ``(a, b, c)`` is voxel ``(a, b, c) * step``.
    """
    affine = np.asarray(affine, float)
    step, index = _field_grid(shape, affine, config.field_spacing_mm)
    grid_shape = index.shape[1:]
    # random part: B-spline coefficients in voxel space every control_spacing_mm, one spare on each side
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    per_control = config.control_spacing_mm / voxel  # voxels between control points, per axis
    n_control = [int(np.ceil((n - 1) / c)) + 3 for n, c in zip(shape, per_control)]
    coefficients = rng.normal(size=(3, *n_control))
    at = index / per_control[:, None, None, None] + 1.0
    # prefilter=False: the coefficients are the spline's own (a smoothing B-spline, not an interpolating one)
    field = np.stack([ndimage.map_coordinates(c, at, order=3, prefilter=False, mode="nearest") for c in coefficients])
    # scaled on this grid: warp_volume interpolates it trilinearly (convex weights), so no voxel moves further
    longest = float(np.linalg.norm(field, axis=0).max())
    field *= config.max_displacement_mm / longest if longest > 0 else 0.0
    b = float(rng.uniform(-1.0, 1.0))
    params = {"breathing_state": round(b, 4), "lungs_found": lungs is not None}
    if lungs is not None and config.breathing_mm > 0:
        world = _world(affine, index.reshape(3, -1)).reshape(3, *grid_shape)
        t_z = np.clip((lungs.z_apex - world[2]) / max(lungs.z_apex - lungs.z_base, 1e-3), 0.0, 1.0)
        t_y = np.clip((world[1] - lungs.y_posterior) / max(lungs.y_anterior - lungs.y_posterior, 1e-3), 0.0, 1.0)
        field[2] -= b * config.breathing_mm * t_z  # inspiration (b > 0): the diaphragm goes down
        field[1] += b * config.ap_ratio * config.breathing_mm * t_y  # ... and the anterior chest wall forward
        params["lungs_mm"] = {k: round(v, 1) for k, v in asdict(lungs).items()}
    return field.astype(np.float32), step, params


def warp_volume(volume: np.ndarray, affine: np.ndarray, field: np.ndarray, step: np.ndarray, *,
                chunk_voxels: int = 2_000_000) -> np.ndarray:
    """``out(p) = volume(p - d(p))`` (trilinear, edge voxels beyond the grid) for ``volume`` ``(X, Y, Z)``,
    ``field``/``step`` from :func:`displacement_field`; float32, same shape. Runs slab by slab along the
    last axis (``chunk_voxels`` per slab) so the coordinates of a 512 x 512 x 133 CT never sit in memory."""
    volume = np.asarray(volume, np.float32)
    to_index = np.linalg.inv(np.asarray(affine, float)[:3, :3])  # world mm displacement -> voxel index
    out = np.empty(volume.shape, np.float32)
    nx, ny, nz = volume.shape
    per_slab = max(1, chunk_voxels // (nx * ny))
    for k0 in range(0, nz, per_slab):
        index = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(k0, min(k0 + per_slab, nz)),
                                     indexing="ij")).reshape(3, -1).astype(np.float64)
        at = index / np.asarray(step, float)[:, None]
        d = np.stack([ndimage.map_coordinates(f, at, order=1, mode="nearest") for f in field])
        source = index - to_index @ d
        out[:, :, k0:k0 + per_slab] = ndimage.map_coordinates(volume, source, order=1, mode="nearest").reshape(
            nx, ny, -1)
    return out


def deform_ct(hu: np.ndarray, affine: np.ndarray, *, seed: int, config: DeformationConfig = DeformationConfig(),
              lungs: LungBox | None = None) -> tuple[np.ndarray, dict]:
    """One deformed copy of ``hu`` ``(X, Y, Z)`` on the same grid: ``(int16 HU, params)``.

    ``lungs``: from :func:`lung_box` (computed here when None). The same ``seed`` gives the same array.
    """
    hu = np.asarray(hu)
    lungs = lungs if lungs is not None else lung_box(hu, affine)
    field, step, params = displacement_field(hu.shape, affine, rng=np.random.default_rng(seed), config=config,
                                             lungs=lungs)
    warped = warp_volume(hu, affine, field, step)
    # trilinear weights are convex: the range cannot grow; the clip only guards float round-off
    warped = np.clip(np.rint(warped), float(hu.min()), float(hu.max())).astype(np.int16)
    params.update(seed=int(seed), max_displacement_found_mm=round(float(np.linalg.norm(field, axis=0).max()), 3))
    return warped, params


def deformed_variants(hu: np.ndarray, affine: np.ndarray, *, k: int, seed: int = 0,
                      config: DeformationConfig = DeformationConfig()) -> Iterator[tuple[np.ndarray, dict]]:
    """``k`` deformed copies (:func:`deform_ct`); variant ``i`` uses a seed derived from ``(seed, i)``, so it
    is the same variant whatever ``k``."""
    lungs = lung_box(hu, affine)
    for child in np.random.SeedSequence(seed).spawn(k):
        yield deform_ct(hu, affine, seed=int(child.generate_state(1)[0]), config=config, lungs=lungs)


def variant_id(subject_id: str, index: int) -> str:
    """ID of the ``index``-th (0-based) variant of ``subject_id``: ``CXR001``, 0 -> ``CXR001-D01``."""
    return f"{subject_id}-D{index + 1:02d}"


def write_deformed_variants(ct_path: str | os.PathLike, out_dir: str | os.PathLike, *, subject_id: str, k: int,
                            seed: int = 0, config: DeformationConfig = DeformationConfig(),
                            overwrite: bool = False, progress: bool = False) -> list[Path]:
    """Write ``k`` variants of the CT at ``ct_path`` as subjects ``out_dir/<ID>-Dnn/ct.nii.gz`` (int16 HU
    on the CT's grid, header copied) + ``deformation.json`` (seed, breathing state, sizes); returns the
    folders. Existing folders are refused before anything is written unless ``overwrite``."""
    ct_path = Path(ct_path)
    try:
        hu, affine = read_volume(ct_path)
    except (OSError, ValueError) as err:
        raise InputError(f"{subject_id}: cannot read CT {ct_path}: {err}") from err
    lungs = lung_box(hu, affine)
    if lungs is None:
        logger.warning("%s: no lungs found in %s: variants get the random field only, no breathing",
                       subject_id, ct_path)
    folders = []
    for folder, variant_seed in subject_folders(out_dir, n=k, seed=seed, subject_id=lambda i: variant_id(subject_id, i),
                                                overwrite=overwrite, progress=progress, desc="deformed CTs"):
        warped, params = deform_ct(hu, affine, seed=variant_seed, config=config, lungs=lungs)
        write_like_reference(warped, reference_path=ct_path, out_path=folder / "ct.nii.gz", overwrite=True,
                             description=f"rtsynth deformed {subject_id} seed {variant_seed}"[:79])
        text = json.dumps({"source": str(ct_path.resolve()), "config": asdict(config),
                           "bound_mm": round(displacement_bound_mm(config), 3), **params}, indent=1)
        atomic_write(folder / "deformation.json", lambda p, text=text: p.write_text(text), overwrite=True)
        folders.append(folder)
    return folders
