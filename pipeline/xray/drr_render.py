"""One CT's DRR pairs: the unit of work of :func:`pipeline.xray.drr_dataset.build_drr_dataset`, which may run
several CTs at a time, each in a process of its own (:func:`render_ct`).

Everything random about a pair (its view, its noise, its drawn system) is fixed before the CT is read: the
poses are drawn in subject order by the caller, and the noise and physics streams are indexed by the pair's
row, so a dataset is the same images whatever the number of processes. Only the detector pitch, fitted to
the CT's extent when not given, is set here, where the CT is read. The dataset's options
(:class:`DRRDatasetConfig`) live here, beside the rendering that reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.io.images2d import DEFAULT_KEYS, save_image_2d
from pipeline.io.volumes import read_volume
from pipeline.xray.physics import AL_FILTER_MM, DE_HIGH_KVP, DE_LOW_KVP, SE_KVP, xray_images
from pipeline.xray.radiograph import RealismConfig, realistic_xray_images
from pipeline.xray.randomisation import PhysicsDraw, PhysicsRanges, draw_physics, physics_rng
from transforms.drr import (
    MATERIAL_NAMES,
    ProjectionGeometry,
    block_average,
    decompose_materials,
    project_line_integrals,
)
from transforms.lung import lung_mask

#: Expected (noise-free) DE images written beside each realistic pair: the bone-leak references.
NOISELESS_KEYS = ("de_soft_noiseless", "de_bone_noiseless")


@dataclass(frozen=True)
class DRRDatasetConfig:
    """Options of :func:`pipeline.xray.drr_dataset.build_drr_dataset`. Lengths in mm, angles in degrees.

    ``pixel_spacing_mm`` None: chosen per CT so the detector covers the CT's largest extent (+5 %)
    after magnification. ``volume_spacing_mm``: block-average the density volumes to at least this
    spacing before projecting (speed; mass-conserving). ``angle_range_deg``: angles are drawn uniformly
    from it; ``max_shift_mm``: isocentre shifts uniform in +-max per axis; ``max_tilt_deg``:
    cranio-caudal beam tilts uniform in +-max (none drawn when 0, so older datasets reproduce).
    ``realism``: scatter, quantum noise and detector blur (:mod:`pipeline.xray.radiograph`), seeded per
    projection; None = noiseless. With realism every pair also gets ``de_soft_noiseless`` and
    ``de_bone_noiseless`` (:data:`NOISELESS_KEYS`: the same chain without quantum noise), the references
    of the bone-leak metric, never training targets. A CT with ``tumours.nii.gz`` beside it (chest
    phantoms) also gets ``tumour_mask`` (projected labels) and ``bone_path`` (bone line integral, g/cm^2)
    images. ``physics_ranges``: draw each image's kVp pair, filtration and realism
    (:mod:`pipeline.xray.randomisation`) instead of using ``kvp_*``, ``al_filter_mm`` and ``realism``;
    the draw is written to the manifest (``kvp_low``, ``kvp_high``, ``al_filter_mm``, ``spr`` ...).
    """

    projections_per_ct: int = 8
    detector_size: int = 256
    pixel_spacing_mm: float | None = None
    sid_mm: float = 1000.0
    sdd_mm: float = 1500.0
    parallel: bool = False
    angle_range_deg: tuple[float, float] = (0.0, 360.0)
    max_shift_mm: float = 5.0
    volume_spacing_mm: float | None = None
    kvp_se: float = SE_KVP
    kvp_low: float = DE_LOW_KVP
    kvp_high: float = DE_HIGH_KVP
    image_format: str = "nii.gz"
    png_scale: float = 2e-4
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    keys: tuple[str, ...] = field(default=DEFAULT_KEYS)
    max_tilt_deg: float = 0.0
    realism: RealismConfig | None = None
    al_filter_mm: float = AL_FILTER_MM
    physics_ranges: PhysicsRanges | None = None

    def __post_init__(self) -> None:
        if self.image_format not in ("nii.gz", "nii", "png"):
            raise ValueError(f"image_format must be 'nii.gz', 'nii' or 'png', got {self.image_format!r}")
        if self.projections_per_ct < 1 or self.detector_size < 8:
            raise ValueError("need projections_per_ct >= 1 and detector_size >= 8")


def _check_hu(subject: str, path: Path, hu: np.ndarray) -> None:
    if hu.ndim != 3 or min(hu.shape) < 2:
        raise InputError(f"{subject}: CT {path} must be a 3-D volume, got shape {hu.shape}")
    if not np.isfinite(hu).all():
        raise InputError(f"{subject}: CT {path} contains NaN or infinite values")
    lo, hi = float(hu.min()), float(hu.max())
    if lo >= -200.0 or hi <= -500.0 or lo < -4000.0 or hi > 40000.0:
        raise InputError(f"{subject}: CT {path} does not look like HU (range [{lo:.0f}, {hi:.0f}]; "
                         "expected air near -1000 and tissue above -500)")


def fit_pixel_spacing(affine: np.ndarray, spatial_shape: Sequence[int], *, detector_size: int,
                      magnification: float, margin: float = 1.05) -> float:
    """Detector pitch (mm) at which ``detector_size`` pixels cover the CT's largest world extent."""
    corners = np.array([[i, j, k, 1.0] for i in (0, spatial_shape[0] - 1) for j in (0, spatial_shape[1] - 1)
                        for k in (0, spatial_shape[2] - 1)])
    world = corners @ np.asarray(affine, dtype=np.float64)[:3].T
    extent = float((world.max(axis=0) - world.min(axis=0)).max())
    return extent * magnification * margin / detector_size


def sample_geometries(rng: np.random.Generator, config: DRRDatasetConfig, *, pixel_spacing_mm: float,
                      ) -> list[ProjectionGeometry]:
    """``config.projections_per_ct`` random geometries (angle, isocentre shift) about the CT centre."""
    lo, hi = config.angle_range_deg
    out = []
    for _ in range(config.projections_per_ct):
        out.append(ProjectionGeometry(
            angle_deg=float(rng.uniform(lo, hi)), sid_mm=config.sid_mm, sdd_mm=config.sdd_mm,
            detector_shape=(config.detector_size, config.detector_size),
            pixel_spacing_mm=(pixel_spacing_mm, pixel_spacing_mm), parallel=config.parallel,
            shift_mm=tuple(float(v) for v in rng.uniform(-config.max_shift_mm, config.max_shift_mm, 3)),
            tilt_deg=float(rng.uniform(-config.max_tilt_deg, config.max_tilt_deg)) if config.max_tilt_deg else 0.0))
    return out


def render_pair(densities: torch.Tensor, affine: np.ndarray, geometry: ProjectionGeometry, *,
                config: DRRDatasetConfig, seed: int | None = None,
                physics: PhysicsDraw | None = None) -> dict[str, torch.Tensor]:
    """One projection: ``{"se", "de_soft", "de_bone", ...}`` float32 (H, W) log images, plus
    ``bone_path`` (bone line integral, g/cm^2), ``lung_path`` (mm of lung along each ray) when
    ``densities`` has the lung channel (:func:`load_densities` ``with_lung``), and, with realism,
    :data:`NOISELESS_KEYS`. ``seed``: the realism noise. ``physics``: this image's drawn system (the SE image
    is then its high-kVp exposure); None: ``config``'s kVps, filtration and realism."""
    projected = project_line_integrals(densities, affine, geometry)
    lines = projected[: len(MATERIAL_NAMES)]
    if physics is not None:
        kvps = {"kvp_se": physics.kvp_high, "kvp_low": physics.kvp_low, "kvp_high": physics.kvp_high}
        al, realism = physics.al_filter_mm, physics.realism
    else:
        kvps = {"kvp_se": config.kvp_se, "kvp_low": config.kvp_low, "kvp_high": config.kvp_high}
        al, realism = config.al_filter_mm, config.realism
    images = xray_images(lines, **kvps, materials=MATERIAL_NAMES, al_filter_mm=al)
    if realism is not None and realism.enabled:
        options = {"config": realism, "pixel_spacing_mm": geometry.pixel_spacing_mm[0],
                   "sdd_mm": geometry.sdd_mm, "al_filter_mm": al, **kvps}
        expected = realistic_xray_images({k: images[k] for k in ("low", "high")}, noiseless=True, **options)
        images = realistic_xray_images(images, seed=seed, **options)
        images.update({f"{k}_noiseless": expected[k] for k in ("de_soft", "de_bone")})
    images["bone_path"] = lines[MATERIAL_NAMES.index("bone")]
    if projected.shape[0] > len(MATERIAL_NAMES):
        images["lung_path"] = projected[len(MATERIAL_NAMES)] * 10.0  # a unit indicator integrates to cm
    return images


def with_realism(config: DRRDatasetConfig) -> bool:
    """Whether the pairs get realism (and so noiseless references): drawn physics always has it."""
    return config.physics_ranges is not None or (config.realism is not None and config.realism.enabled)


def projected_tumour_labels(labels: np.ndarray, affine: np.ndarray, geometry: ProjectionGeometry) -> np.ndarray:
    """``(H, W)`` float32 label image of the tumours of ``labels`` (X, Y, Z) seen in ``geometry``: each
    pixel gets the label whose projected mask covers it with the longest chord (0 = none)."""
    from pipeline.xray.visibility import project_tumour_masks

    masks, chords, values = project_tumour_masks(labels, affine, geometry)
    out = np.zeros(geometry.detector_shape, np.float32)
    if values:
        best = np.where(masks, chords, -1.0).argmax(axis=0)
        covered = masks.any(axis=0)
        out[covered] = np.asarray(values, np.float32)[best[covered]]
    return out


def load_densities(subject: str, path: Path, *, volume_spacing_mm: float | None = None, with_lung: bool = False,
                   ) -> tuple[torch.Tensor, np.ndarray]:
    """Read a CT (HU), check it, and return ``(partial densities (2, X, Y, Z) g/cm^3, affine)``; ``with_lung``
    adds a third channel, the lung parenchyma (:func:`transforms.lung.lung_mask`) as a 0/1 indicator, whose
    line integral is the lung path length of each ray (the evaluation's lung fields)."""
    try:
        hu, affine = read_volume(path)
    except (OSError, ValueError, RuntimeError) as err:
        raise InputError(f"{subject}: cannot read CT {path}: {err}") from err
    _check_hu(subject, path, hu)
    densities = decompose_materials(hu)
    if with_lung:
        lung = torch.from_numpy(lung_mask(hu, affine).astype(np.float32))
        densities = torch.cat([densities, lung[None]])
    if volume_spacing_mm:
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        factors = [max(1, int(np.floor(volume_spacing_mm / s + 1e-6))) for s in spacing]
        densities, affine = block_average(densities, affine, factors)
    return densities, affine




@dataclass(frozen=True)
class CTTask:
    """One CT's share of a dataset, fixed before any CT is read. ``poses``: its views (their pitch is set by
    :func:`render_ct`); ``first_index``: the dataset row of its first pair, which seeds the pair's noise and
    drawn physics (pair ``p`` uses ``first_index + p``); ``split``: its subjects' split."""

    subject: str
    path: Path
    split: str
    poses: tuple[ProjectionGeometry, ...]
    first_index: int


def render_ct(task: CTTask, config: DRRDatasetConfig, out: Path, *, overwrite: bool) -> tuple[list[dict], int]:
    """Render and write ``task``'s pairs under ``out`` (as :func:`pipeline.xray.drr_dataset.build_drr_dataset`
    lays them out); returns ``(manifest rows, PNG pixels saturated)``. Module level, so it runs in a worker."""
    magnification = 1.0 if config.parallel else config.sdd_mm / config.sid_mm
    densities, affine = load_densities(task.subject, task.path, volume_spacing_mm=config.volume_spacing_mm,
                                       with_lung=True)
    tumour_file = Path(task.path).parent / "tumours.nii.gz"
    tumours = read_volume(tumour_file) if tumour_file.exists() else None  # (labels, affine): own grid
    pitch = config.pixel_spacing_mm or fit_pixel_spacing(
        affine, densities.shape[1:], detector_size=config.detector_size, magnification=magnification)
    suffix = "." + config.image_format
    rows, saturated = [], 0
    for p, pose in enumerate(task.poses):
        geometry = replace(pose, pixel_spacing_mm=(pitch, pitch))
        index = task.first_index + p  # the noise's and physics' draws
        physics = (draw_physics(physics_rng(config.seed, index), config.physics_ranges)
                   if config.physics_ranges is not None else None)
        images = render_pair(densities, affine, geometry, config=config, seed=config.seed * 1_000_003 + index,
                             physics=physics)
        row = {"subject_id": task.subject, "projection_id": f"{task.subject}_p{p:03d}"}
        extra = {k: images[k] for k in (*NOISELESS_KEYS, "lung_path") if k in images}
        if tumours is not None:
            extra.update({"tumour_mask": projected_tumour_labels(tumours[0], tumours[1], geometry),
                          "bone_path": images["bone_path"]})
        for key in config.keys:
            target = out / key / f"{row['projection_id']}{suffix}"
            if config.image_format == "png":
                saturated += int((images[key] > 65535 * config.png_scale).sum())
            save_image_2d(images[key], target, png_scale=config.png_scale,
                          pixel_spacing_mm=(pitch, pitch), overwrite=overwrite)
            row[key] = f"{key}/{target.name}"
        row.update({"split": task.split, "angle_deg": round(geometry.angle_deg, 3),
                    "tilt_deg": round(geometry.tilt_deg, 3),
                    "shift_x_mm": round(geometry.shift_mm[0], 3), "shift_y_mm": round(geometry.shift_mm[1], 3),
                    "shift_z_mm": round(geometry.shift_mm[2], 3), "pixel_spacing_mm": round(pitch, 4),
                    "ct": str(Path(task.path).resolve()), **(physics.as_row() if physics is not None else {})})
        for key, image in extra.items():  # exact values (evaluation references, after the pair's
            # own columns): NIfTI, whatever the format
            target = out / key / f"{row['projection_id']}.nii.gz"
            save_image_2d(image, target, pixel_spacing_mm=(pitch, pitch), overwrite=overwrite)
            row[key] = f"{key}/{target.name}"
        rows.append(row)
    return rows, saturated


__all__ = ["NOISELESS_KEYS", "CTTask", "DRRDatasetConfig", "fit_pixel_spacing", "load_densities", "projected_tumour_labels", "render_ct",
           "render_pair", "sample_geometries", "with_realism"]
