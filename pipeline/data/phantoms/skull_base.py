"""Where air and bone meet in a head, painted on top of :func:`pipeline.data.phantoms.anatomy.paint_head`.

The detailed head (:mod:`pipeline.data.phantoms.detailed_head`) adds what makes MR -> CT hard in real
scans, because air, cortical bone, enamel and dentine are all dark in MR:

- temporal bone: external ear canal (air), middle ear, mastoid air cells (a honeycomb of air and thin
  bony septa whose pneumatisation varies from none to large between subjects);
- ethmoid air cells between the orbits; a nasal septum with a bend, and three turbinates per side
  (bone cores under mucosa) that swell unevenly (the nasal cycle);
- mucosa lining every air space, thickened or holding a fluid level in a diseased maxillary sinus.

All functions take the subject's random generator (consumed in a fixed order) and the
:class:`~pipeline.data.phantoms.anatomy.HeadLayout` (frame mm: +x right, +y anterior, +z superior), and
paint into ``layout.canvas`` (channels = :class:`~pipeline.data.phantoms.head_tissues.HeadTissue`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from pipeline.data.phantoms.anatomy import HeadLayout, ellipsoid_sdf, frame_box, front_y, smooth_noise
from pipeline.data.phantoms.head_tissues import HeadTissue as T

NEIGHBOURS = 6  # other cell centres searched for the nearest cell wall

__all__ = ["Ear", "Region", "air_cell_sdf", "capsule_sdf", "line_air_spaces", "paint_ethmoid_and_nose",
           "paint_temporal_bones", "region"]


@dataclass
class Region:
    """A box of the grid (``box``, slices) and the frame coordinates of its voxels (``q``, mm)."""

    box: tuple[slice, slice, slice]
    q: tuple[np.ndarray, np.ndarray, np.ndarray]

    def crop(self, array: np.ndarray) -> np.ndarray:
        """A full-grid array's values in the box."""
        return array[self.box]


def region(layout: HeadLayout, lo, hi) -> Region | None:
    """The :class:`Region` of frame box ``[lo, hi]`` (mm), or None when it is outside the grid."""
    box = frame_box(layout.q, lo, hi)
    return None if box is None else Region(box, tuple(c[box] for c in layout.q))


def capsule_sdf(q, a, b, radius: float) -> np.ndarray:
    """Signed distance (mm) to the capsule of ``radius`` around the segment ``a``-``b`` (frame mm)."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    ab = b - a
    t = np.clip(sum((qi - ai) * d for qi, ai, d in zip(q, a, ab)) / float(ab @ ab), 0.0, 1.0)
    return np.sqrt(sum((qi - ai - t * d) ** 2 for qi, ai, d in zip(q, a, ab))) - radius


def air_cell_sdf(rng: np.random.Generator, q, lo, hi, *, cell_mm: float, septum_mm: float) -> np.ndarray:
    """Honeycomb of air cells: signed distance (mm, negative in air) for the frame coordinates ``q``.

    Cell centres are uniform random points in ``[lo, hi]`` (one per ``cell_mm``^3, margins included) and
    the septa are the Voronoi boundaries between neighbouring cells, ``septum_mm`` thick. A point's distance
    to the boundary between its nearest centre c1 and another centre ci is ``(di^2 - d1^2) / (2 |ci - c1|)``;
    the minimum over the :data:`NEIGHBOURS` nearest other centres is the distance to its cell's wall (exact
    wherever one of them shares that wall, which is almost everywhere).
    """
    lo, hi = np.asarray(lo, dtype=float) - cell_mm, np.asarray(hi, dtype=float) + cell_mm
    n = max(NEIGHBOURS + 1, int(np.prod(hi - lo) / cell_mm**3))
    centres = rng.uniform(lo, hi, size=(n, 3))
    points = np.stack([c.ravel() for c in q], axis=1)
    dist, idx = cKDTree(centres).query(points, k=NEIGHBOURS + 1)
    gap = np.linalg.norm(centres[idx[:, 1:]] - centres[idx[:, :1]], axis=2)
    to_septum = ((dist[:, 1:] ** 2 - dist[:, :1] ** 2) / (2.0 * np.maximum(gap, 1e-6))).min(axis=1)
    return (septum_mm / 2.0 - to_septum).reshape(q[0].shape).astype(np.float32)


def outside_cranium_sdf(layout: HeadLayout, reg: Region) -> np.ndarray:
    """Negative outside the cranial cavity (brain and CSF), so air cells never open into the brain."""
    cavity = np.maximum(reg.crop(layout.d_cranial) - reg.crop(layout.depth),
                        (reg.crop(layout.z_base) + layout.t_base - reg.q[2]) / reg.crop(layout.base_norm))
    return -cavity


@dataclass(frozen=True)
class Ear:
    """Frame position (mm) of the external ear canal's axis, for the jaw's condyles in front of it."""

    y: float
    z: float
    x_middle: float  # |x| of the middle ear (the canal's medial end)


def paint_temporal_bones(rng: np.random.Generator, layout: HeadLayout) -> Ear:
    """Ear canals, middle ears and mastoids on both sides; returns where the canal runs.

    The canal runs laterally from the middle ear at the petrous ridge's lateral end to the skin; the
    mastoid sits behind and below it (cortical shell; inside, air cells 2-6 mm with 0.4-1.2 mm septa,
    or sclerotic diploe in about one subject in six).
    """
    slope = (layout.z_base_ant - layout.z_base_post) / (layout.y_ant - layout.y_post)
    y_ear = -16.0 + rng.uniform(-3.0, 3.0)
    z_floor = layout.z_base_post + slope * (y_ear - layout.y_post)  # skull base above the canal
    ear = Ear(y=y_ear, z=z_floor - 7.0 + rng.uniform(-2.0, 2.0), x_middle=43.0)
    canal_r = rng.uniform(3.0, 4.5)
    pneumatised = rng.uniform() > 1.0 / 6.0
    cell_mm, septum_mm = rng.uniform(2.5, 6.0), rng.uniform(0.4, 1.2)
    size = rng.uniform(0.75, 1.25)
    paint = layout.canvas.paint
    for side in (-1.0, 1.0):
        # mastoid process: behind and below the canal, straddling the skull and the soft tissue below it
        centre = np.array([side * (layout.head_semi[0] - 22.0), ear.y - 15.0, ear.z - 9.0])
        semi = np.array([11.0, 13.0, 16.0]) * size
        reg = region(layout, centre - semi - 2.0, centre + semi + 2.0)
        if reg is not None:
            keep_out = np.maximum(reg.crop(layout.d_fat) + 1.0 - reg.crop(layout.depth), outside_cranium_sdf(layout, reg))
            shell = np.maximum(ellipsoid_sdf(reg.q, centre, semi), keep_out)
            paint(T.CORTICAL_BONE, shell, reg.box)
            inner = shell + 1.5
            if pneumatised:
                cells = air_cell_sdf(rng, reg.q, centre - semi, centre + semi, cell_mm=cell_mm, septum_mm=septum_mm)
                paint(T.SINUS_AIR, np.maximum(inner, cells), reg.box)
            else:
                paint(T.DIPLOE, inner, reg.box)
        # canal (skin to middle ear) and the middle ear cavity in the petrous bone
        lo = np.array([min(side * ear.x_middle, side * 120.0), ear.y - 8.0, ear.z - 8.0])
        hi = np.array([max(side * ear.x_middle, side * 120.0), ear.y + 8.0, ear.z + 8.0])
        reg = region(layout, lo, hi)
        if reg is not None:
            canal = np.maximum(np.hypot(reg.q[1] - ear.y, reg.q[2] - ear.z) - canal_r, side * (side * ear.x_middle - reg.q[0]))
            keep_out = np.maximum(1.0 - reg.crop(layout.depth), outside_cranium_sdf(layout, reg))
            canal = np.maximum(canal, keep_out)  # inside the head (the body outline stays) and below the brain
            middle = ellipsoid_sdf(reg.q, (side * ear.x_middle, ear.y, ear.z), (3.0, 6.0, 7.0))
            paint(T.SINUS_AIR, np.maximum(np.minimum(canal, middle), keep_out), reg.box)
    return ear


def paint_ethmoid_and_nose(rng: np.random.Generator, layout: HeadLayout) -> None:
    """Ethmoid air cells between the orbits, a bent nasal septum and three turbinates per side."""
    paint = layout.canvas.paint
    cx, cy, cz = layout.nasal_centre
    ax, ay, az = layout.nasal_semi
    y_eye = front_y(layout.head_semi, layout.x_eye, layout.z_eye) - (layout.r_eye + 5.0)
    # ethmoid labyrinths: between the orbits' medial walls, above the nasal cavity, below the anterior fossa
    half_x = max(layout.x_eye - layout.r_eye - 8.5, 6.0)
    lo = np.array([-half_x, y_eye - 26.0, layout.z_eye - 6.0])
    hi = np.array([half_x, y_eye + 6.0, min(layout.z_eye + 14.0, layout.z_base_ant - 1.0)])
    reg = region(layout, lo, hi)
    if reg is not None:
        mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
        block = np.maximum.reduce([np.abs(qi - m) - h for qi, m, h in zip(reg.q, mid, half)])
        paint(T.CORTICAL_BONE, block, reg.box)
        cells = air_cell_sdf(rng, reg.q, lo, hi, cell_mm=rng.uniform(3.5, 7.0), septum_mm=rng.uniform(0.4, 1.0))
        paint(T.SINUS_AIR, np.maximum.reduce([cells, block + 1.0, 1.2 - np.abs(reg.q[0])]), reg.box)
    # nasal cavity: clear paint_head's straight septum, paint a thin bent one, then the turbinates
    reg = region(layout, (cx - ax - 2, cy - ay - 2, cz - az - 2), (cx + ax + 2, cy + ay + 2, cz + az + 2))
    if reg is None:
        return
    cavity = ellipsoid_sdf(reg.q, layout.nasal_centre, layout.nasal_semi)
    paint(T.SINUS_AIR, cavity, reg.box)
    bend = rng.uniform(-3.5, 3.5) * np.exp(-(((reg.q[2] - cz - rng.uniform(-10, 10)) / 12.0) ** 2))
    paint(T.CORTICAL_BONE, np.maximum(np.abs(reg.q[0] - bend) - rng.uniform(0.5, 0.9), cavity), reg.box)
    for side in (-1.0, 1.0):
        swell = rng.uniform(0.7, 1.3)  # nasal cycle: one side congested, the other open
        for dz, semi_x, semi_y, semi_z in ((-0.42, 3.4, 0.85, 5.5), (0.08, 2.8, 0.65, 4.0), (0.45, 2.0, 0.4, 3.0)):
            semi = np.array([semi_x * swell, semi_y * ay, semi_z])
            centre = (side * (ax - 0.6 * semi[0]), cy - 0.1 * ay, cz + dz * az)
            paint(T.MUCOSA, np.maximum(ellipsoid_sdf(reg.q, centre, semi), cavity), reg.box)
            paint(T.CORTICAL_BONE, ellipsoid_sdf(reg.q, centre, semi * np.array([0.3, 0.9, 0.35])), reg.box)


def line_air_spaces(rng: np.random.Generator, layout: HeadLayout) -> None:
    """Mucosa lining every air space inside the head (0.5-2.5 mm, varying), and in about one subject in
    three a diseased maxillary sinus: thickened mucosa (4-9 mm) or a fluid level (fluid lies posterior,
    the patient being supine)."""
    canvas = layout.canvas
    inside = canvas.fractions[T.SINUS_AIR] > 0.5
    idx = [np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(i.size == 0 for i in idx):
        return
    box = tuple(slice(max(int(i[0]) - 2, 0), int(i[-1]) + 3) for i in idx)
    spacing = layout.spacing
    to_wall = ndimage.distance_transform_edt(inside[box], sampling=spacing).astype(np.float32)
    q = tuple(c[box] for c in layout.q)
    shape = to_wall.shape
    thickness = rng.uniform(0.5, 2.0) + 0.4 * np.abs(smooth_noise(rng, shape, spacing, 12.0))
    disease = rng.uniform()
    side = rng.choice([-1.0, 1.0])
    y_back = layout.nasal_centre[1] - layout.nasal_semi[1]  # the maxillary sinuses lie in front of this
    sinus = np.maximum.reduce([side * (side * 12.0 - q[0]), np.abs(q[0]) - 45.0, np.abs(q[2] - layout.z_maxillary) - 20.0,
                               y_back - q[1]])  # that side's maxillary sinus (negative inside its region)
    if disease < 0.17:  # thickened mucosa
        thickness = np.where(sinus < 0, thickness + rng.uniform(4.0, 9.0), thickness)
    canvas.convert(T.SINUS_AIR, T.MUCOSA, to_wall - 0.5 * float(np.mean(spacing)) - thickness, box)
    if 0.17 <= disease < 0.34:  # fluid level: the posterior part of the sinus' air, fluid with CSF's properties
        in_sinus = (sinus < 0) & (canvas.fractions[(T.SINUS_AIR, *box)] > 0.5)
        if in_sinus.any():
            ys = q[1][in_sinus]
            level = float(ys.min() + rng.uniform(0.25, 0.6) * (ys.max() - ys.min()))
            canvas.convert(T.SINUS_AIR, T.CSF, np.where(sinus < 0, q[1] - level, 1e3).astype(np.float32), box)
