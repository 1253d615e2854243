"""Water-equivalent path length (WEPL) and proton range shift along beam directions.

Geometry: arrays are indexed ``(i, j, k)`` in the dose module's patient frame, where a voxel centre sits
at ``(i, j, k) * spacing_mm`` (mm) and the axes point to the patient's Left, Posterior and Superior
(LPS, as in pyRadPlan/matRad/DICOM); see :func:`pipeline.dose.plans.to_lps`. Samples outside the
volume count as vacuum (RSP 0).

Range shift convention: a proton pencil beam whose energy reaches the distal edge of the target in the
reference (CT) volume has water range ``W_ref``; in the evaluated (sCT) volume it stops where the
cumulative WEPL reaches ``W_ref``. ``range_shift_mm = depth_eval - depth_ref`` is therefore negative
when the sCT is denser (higher RSP) than the CT along the path (the sCT dose stops short) and positive
when it is less dense. ``wepl_diff_mm = WEPL_eval - WEPL_ref`` at the reference distal point has the
opposite sign.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["beam_direction", "cumulative_wepl", "range_shift", "sample_rays", "segment_wepl"]


def beam_direction(gantry_deg: float, *, couch_deg: float = 0.0) -> np.ndarray:
    """Unit vector (LPS) in which the beam travels, for matRad/IEC gantry angle ``gantry_deg`` (degrees).

    Gantry 0: beam from anterior (travels +P); gantry 90: from the patient's left (travels -L, i.e.
    towards the right). Only coplanar beams (``couch_deg == 0``) are supported.
    """
    if couch_deg != 0.0:
        raise NotImplementedError("only coplanar beams (couch angle 0) are supported")
    g = np.deg2rad(gantry_deg)
    return np.array([-np.sin(g), np.cos(g), 0.0])


def _lateral_basis(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    helper = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(d, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


def sample_rays(
    volume: np.ndarray, points_mm: np.ndarray, *, spacing_mm: Sequence[float], order: int = 1
) -> np.ndarray:
    """Interpolate ``volume`` at points ``(..., 3)`` given in mm (order 1: trilinear, 0: nearest); 0 outside."""
    points = np.asarray(points_mm, float)
    coords = (points / np.asarray(spacing_mm, float)).reshape(-1, 3).T
    values = ndimage.map_coordinates(np.asarray(volume, np.float32), coords, order=order, mode="constant", cval=0.0)
    return values.reshape(points.shape[:-1])


def cumulative_wepl(rsp_samples: np.ndarray, *, step_mm: float) -> np.ndarray:
    """Cumulative WEPL (mm) at each sample of rays sampled every ``step_mm`` (trapezoid rule).

    ``rsp_samples`` is ``(..., n)`` relative stopping power along each ray; the result has the same shape
    and is 0 at the first sample.
    """
    r = np.asarray(rsp_samples, float)
    increments = 0.5 * (r[..., 1:] + r[..., :-1]) * step_mm
    return np.concatenate([np.zeros(r.shape[:-1] + (1,)), np.cumsum(increments, axis=-1)], axis=-1)


def segment_wepl(
    rsp: np.ndarray, *, spacing_mm: Sequence[float], start_mm: Sequence[float], end_mm: Sequence[float],
    step_mm: float = 0.25,
) -> float:
    """WEPL (mm) of the straight segment from ``start_mm`` to ``end_mm`` through the RSP volume."""
    start, end = np.asarray(start_mm, float), np.asarray(end_mm, float)
    length = float(np.linalg.norm(end - start))
    n = max(int(np.ceil(length / step_mm)), 1) + 1
    points = start + np.linspace(0.0, 1.0, n)[:, None] * (end - start)
    return float(cumulative_wepl(sample_rays(rsp, points, spacing_mm=spacing_mm), step_mm=length / (n - 1))[-1])


def _ray_grid(target: np.ndarray, spacing_mm: np.ndarray, direction: np.ndarray, lateral_step_mm: float,
              step_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Parallel rays through the target's beam's-eye-view footprint: points ``(n_rays, n_steps, 3)`` mm."""
    u, v = _lateral_basis(direction)
    extent = (np.asarray(target.shape) - 1) * spacing_mm
    centre = extent / 2.0
    half_length = 0.5 * float(np.linalg.norm(extent)) + 2.0 * step_mm
    target_mm = np.argwhere(target) * spacing_mm - centre
    a, b = target_mm @ u, target_mm @ v
    grid_a = np.arange(a.min() - lateral_step_mm, a.max() + 1.5 * lateral_step_mm, lateral_step_mm)
    grid_b = np.arange(b.min() - lateral_step_mm, b.max() + 1.5 * lateral_step_mm, lateral_step_mm)
    aa, bb = np.meshgrid(grid_a, grid_b, indexing="ij")
    origins = centre + aa.reshape(-1, 1) * u + bb.reshape(-1, 1) * v - half_length * direction
    depths = np.arange(0.0, 2.0 * half_length + step_mm / 2, step_mm)
    return origins[:, None, :] + depths[None, :, None] * direction, depths


def range_shift(
    rsp_ref: np.ndarray,
    rsp_eval: np.ndarray,
    target: np.ndarray,
    *,
    spacing_mm: Sequence[float],
    direction: Sequence[float],
    lateral_step_mm: float = 3.0,
    step_mm: float = 0.5,
) -> dict[str, np.ndarray]:
    """Per-ray WEPL and range differences at the distal edge of ``target`` for one beam direction.

    Args:
        rsp_ref, rsp_eval: relative stopping power volumes (reference CT, evaluated sCT), same shape.
        target: boolean target mask on the same grid.
        spacing_mm: voxel size (mm) per axis.
        direction: beam travel direction (LPS, e.g. :func:`beam_direction`).
        lateral_step_mm: spacing of the parallel rays across the target's footprint (mm).
        step_mm: sampling step along each ray (mm).

    Returns:
        Arrays over the rays that hit the target: ``depth_ref_mm`` (geometric depth of the distal target
        point from the ray start), ``wepl_ref_mm`` (WEPL to it in the reference), ``wepl_diff_mm``
        (evaluated minus reference WEPL to the same point) and ``range_shift_mm`` (see the module
        docstring). Empty arrays if no ray hits the target.
    """
    if not (np.shape(rsp_ref) == np.shape(rsp_eval) == np.shape(target)):
        raise ValueError(f"shape mismatch: {np.shape(rsp_ref)}, {np.shape(rsp_eval)}, {np.shape(target)}")
    target = np.asarray(target) > 0
    if not target.any():
        raise ValueError("target mask is empty")
    spacing = np.asarray(spacing_mm, float)
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    points, depths = _ray_grid(target, spacing, d, lateral_step_mm, step_mm)
    in_target = sample_rays(target.astype(np.float32), points, spacing_mm=spacing, order=0) > 0.5
    hit = in_target.any(axis=1)
    points, in_target = points[hit], in_target[hit]
    w_ref = cumulative_wepl(sample_rays(rsp_ref, points, spacing_mm=spacing), step_mm=step_mm)
    w_eval = cumulative_wepl(sample_rays(rsp_eval, points, spacing_mm=spacing), step_mm=step_mm)
    distal = in_target.shape[1] - 1 - np.argmax(in_target[:, ::-1], axis=1)
    rows = np.arange(distal.size)
    wepl_ref = w_ref[rows, distal]
    # depth at which the evaluated cumulative WEPL reaches the reference water range (monotone in depth)
    depth_eval = np.array([np.interp(wepl_ref[i], np.maximum.accumulate(w_eval[i]), depths) for i in rows])
    return {
        "depth_ref_mm": depths[distal],
        "wepl_ref_mm": wepl_ref,
        "wepl_diff_mm": w_eval[rows, distal] - wepl_ref,
        "range_shift_mm": depth_eval - depths[distal],
    }
