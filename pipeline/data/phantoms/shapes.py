"""Signed-distance primitives and the painting canvas the chest phantom is built with.

Every structure is an approximate signed distance (mm, negative inside) on an open grid of world
coordinates (``x`` of shape ``(X, 1, 1)``, ``y`` ``(1, Y, 1)``, ``z`` ``(1, 1, Z)``), painted onto a HU
volume with a one-voxel linear partial-volume ramp: occupancy ``clip(0.5 - sdf / voxel, 0, 1)``, the
new HU blended in by that fraction, so later structures replace earlier ones and thin layers (a 1 mm
cortex) survive as mixed voxels instead of aliasing in or out.

Small structures (vessel segments, rib pieces, vertebral processes) are computed inside their bounding
box only (:meth:`Canvas.box`); a chain of segments (a rib, a vessel) is one union of capsules
(:meth:`Canvas.union_of_capsules`, a :data:`Region`), painted once so overlapping segments do not darken
their joints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["ellipse_sdf", "ellipsoid_sdf", "capsule_sdf", "intersect", "rotation", "Canvas", "Region"]


def ellipse_sdf(u: np.ndarray, v: np.ndarray, a, b) -> np.ndarray:
    """Approximate signed distance (mm) to the ellipse u^2/a^2 + v^2/b^2 = 1: (r - 1) / |grad r|."""
    p, q = u / a, v / b
    r = np.sqrt(p * p + q * q)
    grad = np.sqrt((p / a) ** 2 + (q / b) ** 2) / np.maximum(r, 1e-6)
    return (r - 1.0) / np.maximum(grad, 1.0 / np.maximum(a, b))  # |grad r| >= 1 / largest half-axis (centre too)


def rotation(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """3x3 matrix whose rows are a body's axes in the world: rotated ``yaw`` about z, then ``pitch``
    about the new y, then ``roll`` about the new x (degrees)."""
    a, b, c = np.radians([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return (rz @ ry @ rx).T


def ellipsoid_sdf(x, y, z, centre, semi, axes: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid with half-axes ``semi`` along the rows of
    ``axes`` (a rotation, :func:`rotation`; None: the world axes). Open grids broadcast."""
    rel = (x - centre[0], y - centre[1], z - centre[2])
    if axes is None:
        u = rel
    else:
        u = tuple(axes[i, 0] * rel[0] + axes[i, 1] * rel[1] + axes[i, 2] * rel[2] for i in range(3))
    s = [ui / a for ui, a in zip(u, semi)]
    r = np.sqrt(s[0] ** 2 + s[1] ** 2 + s[2] ** 2)
    grad = np.sqrt(sum((si / a) ** 2 for si, a in zip(s, semi))) / np.maximum(r, 1e-6)
    return (r - 1.0) / np.maximum(grad, 1.0 / float(np.max(semi)))


def capsule_sdf(x, y, z, p0, p1, radius: float, *, z_scale: float = 1.0) -> np.ndarray:
    """Signed distance (mm) to the capsule of ``radius`` around the segment p0 -> p1 (open grids ok).

    ``z_scale`` < 1 stretches the cross-section along z by ``1 / z_scale`` (a flat rib: ``radius`` is the
    half-thickness, ``radius / z_scale`` the half-height); the distance is then measured in that scaled
    space (exact across the segment, approximate along z)."""
    p0 = np.asarray(p0, float) * (1.0, 1.0, z_scale)
    d = np.asarray(p1, float) * (1.0, 1.0, z_scale) - p0
    rel = (x - p0[0], y - p0[1], z * z_scale - p0[2])
    t = np.clip((rel[0] * d[0] + rel[1] * d[1] + rel[2] * d[2]) / max(float(d @ d), 1e-9), 0.0, 1.0)
    return np.sqrt((rel[0] - t * d[0]) ** 2 + (rel[1] - t * d[1]) ** 2 + (rel[2] - t * d[2]) ** 2) - radius


def intersect(*sdfs: np.ndarray) -> np.ndarray:
    """Signed distance (approximate) of the intersection: the pointwise maximum, broadcasting."""
    out = sdfs[0]
    for other in sdfs[1:]:
        out = np.maximum(out, other)
    return out


Box = tuple[slice, slice, slice]
#: A box of the grid and a signed distance (mm) computed inside it only.
Region = tuple[Box, np.ndarray]


class Canvas:
    """HU volume ``(X, Y, Z)`` (float32) on the open grid ``q = (x, y, z)`` (mm) and the painting rule."""

    def __init__(self, q: tuple[np.ndarray, ...], voxel_mm: float, background: float) -> None:
        self.q, self.voxel = q, voxel_mm
        self.axes = [a.ravel() for a in q]
        self.hu = np.full(tuple(len(a) for a in self.axes), background, dtype=np.float32)
        self.claimed: np.ndarray | None = None  # see start_claiming

    def start_claiming(self) -> None:
        """From now on keep, per voxel, the largest occupancy any paint gives (``self.claimed``, 0..1):
        what later structures took, whatever HU they were painted with."""
        self.claimed = np.zeros(self.hu.shape, dtype=np.float32)

    def _claim(self, slices, occ: np.ndarray) -> None:
        if self.claimed is not None:
            np.maximum(self.claimed[slices], occ, out=self.claimed[slices])

    def occupancy(self, sdf: np.ndarray) -> np.ndarray:
        return np.clip(0.5 - sdf / self.voxel, 0.0, 1.0).astype(np.float32)

    def paint(self, sdf: np.ndarray, value, where: np.ndarray | None = None) -> np.ndarray:
        """Blend ``value`` (HU, scalar or array) where ``sdf < 0`` over the whole grid; ``where`` (0..1)
        limits it. Returns the occupancy painted."""
        occ = np.broadcast_to(self.occupancy(sdf), self.hu.shape)
        if where is not None:
            occ = occ * where
        self.hu += (np.asarray(value, dtype=np.float32) - self.hu) * occ
        self._claim((slice(None),) * 3, occ)
        return occ

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[Box, tuple[np.ndarray, ...]] | None:
        """Index slices and open sub-grid covering world ``[lo, hi]`` (mm) plus one voxel; None if empty."""
        slices = tuple(slice(int(np.searchsorted(a, l - self.voxel)), int(np.searchsorted(a, h + self.voxel)))
                       for a, l, h in zip(self.axes, lo, hi))
        if any(s.stop <= s.start for s in slices):
            return None
        sub = (self.axes[0][slices[0]][:, None, None], self.axes[1][slices[1]][None, :, None],
               self.axes[2][slices[2]][None, None, :])
        return slices, sub

    def paint_in_box(self, lo, hi, sdf_of: Callable[..., np.ndarray], value: float, *,
                     where: np.ndarray | None = None, record: np.ndarray | None = None,
                     within: np.ndarray | None = None) -> None:
        """Paint ``sdf_of(x, y, z)`` computed inside the box ``[lo, hi]`` only. ``where``: a full-grid
        0..1 factor on the occupancy (vessels painted into free lung only); ``record``: a full-grid array
        that keeps the largest occupancy painted here (e.g. where the heart is); ``within``: a full-grid
        signed distance the shape is intersected with (an organ kept inside its cavity)."""
        found = self.box(lo, hi)
        if found is None:
            return
        slices, (x, y, z) = found
        sdf = sdf_of(x, y, z)
        if within is not None:
            sdf = np.maximum(sdf, within[slices])
        occ = self.occupancy(sdf)
        if where is not None:
            occ = occ * where[slices]
        view = self.hu[slices]
        view += (value - view) * occ
        self._claim(slices, occ)
        if record is not None:
            np.maximum(record[slices], occ, out=record[slices])

    def region(self, lo: Sequence[float], hi: Sequence[float], sdf_of: Callable[..., np.ndarray] | None = None,
               ) -> Region | None:
        """A :data:`Region`: the box ``[lo, hi]`` and ``sdf_of(x, y, z)`` in it (None: far, +1000 mm)."""
        found = self.box(lo, hi)
        if found is None:
            return None
        slices, (x, y, z) = found
        if sdf_of is None:
            return slices, np.full((x.shape[0], y.shape[1], z.shape[2]), 1e3, dtype=np.float32)
        return slices, np.broadcast_to(sdf_of(x, y, z), (x.shape[0], y.shape[1], z.shape[2])).astype(np.float32)

    def union_of_capsules(self, segments: Sequence[tuple[np.ndarray, np.ndarray, float]], *,
                          z_scale: float = 1.0) -> Region | None:
        """The union of capsules ``(p0, p1, radius)`` as a :data:`Region` (see :func:`capsule_sdf` for
        ``z_scale``); each capsule is computed in its own small box."""
        if not segments:
            return None
        reach = [radius / min(z_scale, 1.0) for _, _, radius in segments]
        lo = np.min([np.minimum(p0, p1) - r for (p0, p1, _), r in zip(segments, reach)], axis=0)
        hi = np.max([np.maximum(p0, p1) + r for (p0, p1, _), r in zip(segments, reach)], axis=0)
        region = self.region(lo, hi)
        if region is None:
            return None
        outer, sdf = region
        for (p0, p1, radius), r in zip(segments, reach):
            found = self.box(np.minimum(p0, p1) - r, np.maximum(p0, p1) + r)
            if found is None:
                continue
            slices, (x, y, z) = found
            local = tuple(slice(max(s.start, o.start) - o.start, min(s.stop, o.stop) - o.start)
                          for s, o in zip(slices, outer))
            crop = tuple(slice(l.start + o.start - s.start, l.stop + o.start - s.start)
                         for l, s, o in zip(local, slices, outer))
            d = capsule_sdf(x, y, z, p0, p1, radius, z_scale=z_scale)
            d = np.broadcast_to(d, (x.shape[0], y.shape[1], z.shape[2]))[crop]
            np.minimum(sdf[local], d, out=sdf[local])
        return outer, sdf

    def paint_region(self, region: Region | None, value: float, *, grow: float = 0.0,
                     record: np.ndarray | None = None) -> None:
        """Blend ``value`` where the region's signed distance ``+ grow`` is negative (``grow`` > 0 shrinks the
        shape: the marrow inside a cortical shell); ``record`` keeps the largest occupancy (full grid)."""
        if region is None:
            return
        slices, sdf = region
        occ = self.occupancy(sdf + grow)
        view = self.hu[slices]
        view += (value - view) * occ
        self._claim(slices, occ)
        if record is not None:
            np.maximum(record[slices], occ, out=record[slices])
