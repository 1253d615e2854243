"""The chest phantom's frame (rib cage and spine as functions of height) and its skeleton.

:class:`Thorax` holds one subject's skeletal geometry in the anatomical frame (mm; RAS: +x = the
patient's right, +y anterior, +z superior). :func:`paint_skeleton` paints, onto a
:class:`pipeline.data.phantoms.shapes.Canvas`: costal cartilage, ribs, sternum, spine, scapulae,
clavicles and humeri. Shapes follow the real chest CT's segmentation (docs/chest_phantoms.md):

- ribs: 12 pairs on the rib-cage surface, from the vertebra (head, neck, tubercle) round the back
  (flat for the first ~55 deg), then descending along the lateral and anterior arcs; the anterior end
  lies 45-100 mm below the posterior one (less at deep inspiration), so posterior and anterior arcs
  cross at different heights in an AP view; flat cross-section (about 6 x 12 mm), thin cortex over
  marrow; costal cartilage (below the bone threshold) from the anterior ends to the sternum, the lower
  ones rising to it (costal margin); 11-12 floating;
- spine C6-L3 with a kyphosis and, in some subjects, a scoliosis: vertebral bodies (cortex, cancellous
  bone, discs), pedicles, laminae, transverse and spinous processes, the canal;
- scapulae on the posterior chest wall (plate, thick lateral border, spine and acromion, glenoid,
  coracoid), swung laterally and up when the arms are raised; clavicles from the sternal notch to the
  acromion; humeri (head at the glenoid, shaft down the side or up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.phantoms.shapes import Canvas, Region, ellipse_sdf, ellipsoid_sdf, intersect

__all__ = ["Thorax", "make_thorax", "paint_skeleton", "RIB_END_DEG"]

#: Angle (deg, 0 = straight back, 180 = the sternum) where each rib's bone ends (the real CT's ribs).
RIB_END_DEG = np.array([150, 152, 145, 142, 138, 132, 124, 116, 106, 97, 82, 58], dtype=float)
#: Drop (mm at size 1, expiration) from a rib's posterior to its anterior end.
RIB_DROP_MM = np.array([45, 52, 68, 85, 95, 95, 95, 88, 78, 65, 48, 20], dtype=float)
RIB_START_DEG = 18.0
#: Angle (deg) up to which each rib runs level from the spine before it starts to descend (lower ribs sooner).
RIB_FLAT_DEG = np.array([30, 28, 26, 24, 22, 20, 20, 18, 16, 14, 12, 10], dtype=float)


@dataclass(frozen=True)
class Thorax:
    """One subject's rib cage and spine. ``rib_z[k]``: height of rib k+1 at the spine (mm)."""

    s: float  # overall size
    breath: float  # 0 expiration .. 1 deep inspiration
    a_max: float  # rib-cage half-width at its widest (mm)
    b_max: float  # rib-cage half-depth (mm)
    y_c: float  # rib-cage centre (A-P, mm)
    rib_z: np.ndarray
    kyphosis_mm: float
    scoliosis_mm: float
    arms_raised: bool

    @property
    def z_apex(self) -> float:
        return float(self.rib_z[0] + 16.0 * self.s)

    def cage(self, z):
        """Half-axes ``(a, b)`` (mm) of the rib cage's centre surface at height ``z`` (tapers to the apex)."""
        z_wide = self.rib_z[7]
        u = ((np.asarray(z, float) - z_wide) / (self.z_apex - z_wide)).clip(0, None)
        taper = np.sqrt(np.clip(1.0 - u ** 2, 0.04, 1.0))
        return self.a_max * taper, self.b_max * (0.55 + 0.45 * taper)

    def spine(self, z):
        """Vertebral-body centre ``(x, y)`` (mm) at height ``z``: kyphosis (mid-thoracic most posterior)
        and scoliosis (a lateral bow)."""
        z = np.asarray(z, float)
        top, bottom = self.rib_z[0] + 40.0 * self.s, self.rib_z[-1] - 60.0 * self.s
        t = ((z - bottom) / (top - bottom)).clip(0, 1)
        _, b = self.cage(z)
        return self.scoliosis_mm * np.sin(np.pi * t), self.y_c - 0.62 * b - self.kyphosis_mm * np.sin(np.pi * t)

    def vertebra_size(self, z):
        """Vertebral-body half-width and half-depth (mm): growing from the neck to the lumbar spine."""
        t = ((self.rib_z[0] + 40.0 * self.s - np.asarray(z, float)) / (330.0 * self.s)).clip(0, 1)
        return self.s * (13.0 + 10.0 * t), self.s * (10.0 + 7.0 * t)

    def surface_point(self, side: float, phi, z, offset: float = 0.0) -> np.ndarray:
        """Points ``(N, 3)`` on the cage surface (``offset`` mm outwards) at angle ``phi`` (rad from the
        back) and height ``z``; ``side`` +1 = right, -1 = left."""
        phi, z = np.broadcast_arrays(np.atleast_1d(np.asarray(phi, float)), np.atleast_1d(np.asarray(z, float)))
        a, b = self.cage(z)
        a, b = a + offset, b + offset
        return np.stack([side * a * np.sin(phi), self.y_c - b * np.cos(phi), z], axis=-1)

    def scapula_layout(self) -> dict[str, float]:
        """Scapula corners: heights (mm) of the superior and inferior angles and of the glenoid, angles
        (rad from the back) of the medial border, inferior angle and glenoid; raised arms swing the
        inferior angle laterally and lift the glenoid."""
        s, raised = self.s, self.arms_raised
        return {"z_sup": self.rib_z[1] + (15.0 if raised else 5.0) * s,
                "z_inf": self.rib_z[5 if raised else 6] - 5.0 * s,
                "phi_med": 0.5 if raised else 0.42, "phi_inf": 0.95 if raised else 0.55, "phi_glen": 1.45,
                "z_glen": self.rib_z[0] + (8.0 if raised else -12.0) * s, "offset": 14.0 * s}

    def glenoid(self, side: float) -> np.ndarray:
        """Centre (mm) of the glenoid of the ``side`` scapula: at the shoulder's width, behind the cage's
        mid-plane (the cage itself tapers towards the apex above it)."""
        return np.array([side * (0.82 * self.a_max + 4.0 * self.s), self.y_c - 0.35 * self.b_max,
                         self.scapula_layout()["z_glen"]])

    def humerus(self, side: float) -> tuple[np.ndarray, np.ndarray]:
        """Humeral head centre (mm) and the shaft's unit direction: down the side, or raised."""
        head = self.glenoid(side) + np.array([side * 24.0, 2.0, -2.0]) * self.s
        direction = np.array([side * 0.45, 0.15, 0.88]) if self.arms_raised else np.array([side * 0.12, 0.05, -1.0])
        return head, direction / np.linalg.norm(direction)

    def rib_height(self, k: int, phi) -> np.ndarray:
        """Height (mm) of rib ``k`` (0-based) at angle ``phi`` (rad): level, then descending."""
        start, end = np.radians(RIB_FLAT_DEG[k]), np.radians(RIB_END_DEG[k])
        ramp = ((np.asarray(phi, float) - start) / (end - start)).clip(0, 1)
        return self.rib_z[k] - RIB_DROP_MM[k] * self.s * (1.0 - 0.3 * self.breath) * ramp ** 1.5


def make_thorax(rng: np.random.Generator, *, s: float, breath: float, z_shift: float,
                arms: str | None = None) -> Thorax:
    """Draw one subject's cage and spine (size ``s``, breathing state, vertical position); ``arms``
    ("side" or "raised") forces the posture, which is otherwise drawn (every draw is made either way)."""
    if arms not in (None, "side", "raised"):
        raise ValueError(f"arms must be 'side' or 'raised', got {arms!r}")
    pitches = np.linspace(19.0, 29.0, 11) * s * (1.0 + 0.05 * breath) * rng.uniform(0.95, 1.05)
    rib_z = 118.0 * s + z_shift - np.concatenate([[0.0], np.cumsum(pitches)])
    scoliosis = float(rng.choice([0.0, 1.0], p=[0.7, 0.3]) * rng.uniform(-12.0, 12.0) + rng.uniform(-3.0, 3.0))
    return Thorax(s=s, breath=breath, a_max=138.0 * s * rng.uniform(0.93, 1.07),
                  b_max=95.0 * s * rng.uniform(0.88, 1.08) * (1.0 + 0.05 * breath), y_c=float(rng.uniform(-5, 10)),
                  rib_z=rib_z, kyphosis_mm=float(rng.uniform(0.0, 22.0) * s), scoliosis_mm=scoliosis,
                  arms_raised=bool(rng.random() < 0.5) if arms is None else arms == "raised")


def _chain(points: np.ndarray, radius: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    return [(p0, p1, radius) for p0, p1 in zip(points[:-1], points[1:])]


def _bone(canvas: Canvas, region: Region | None, *, cortical: float, inner: float, shell_mm: float,
          record: np.ndarray | None = None) -> None:
    """Cortical shell of ``shell_mm`` (HU ``cortical``) over an interior of HU ``inner``."""
    canvas.paint_region(region, cortical, record=record)
    canvas.paint_region(region, inner, grow=shell_mm)


def paint_skeleton(canvas: Canvas, thorax: Thorax, rng: np.random.Generator, hu: dict[str, float], *,
                   rib_density: float = 1.0) -> np.ndarray:
    """Paint the skeleton (module docstring); returns the ribs' occupancy (0..1, full grid). ``rib_density``
    scales the ribs' cortical and marrow HU (not the cartilage, spine or other bones)."""
    t, s = thorax, thorax.s
    cortical = float(rng.uniform(0.8, 1.1) * hu["cortical"])
    marrow = float(rng.uniform(0.6, 1.3) * hu["marrow"])
    st_top = t.rib_z[0] - 30.0 * s  # sternal notch
    attach = np.concatenate([[st_top - 12 * s, st_top - 48 * s], np.linspace(st_top - 70 * s, st_top - 140 * s, 5)])

    # Costal cartilage (ribs 1-10), then the ribs over it.
    cartilage = []
    for side in (1.0, -1.0):
        for k in range(10):
            phi0 = np.radians(RIB_END_DEG[k])
            z0 = float(t.rib_height(k, phi0))
            if k < 7:
                phi1, z1 = np.pi - np.arctan2(16.0 * s, t.b_max), attach[k]
            else:  # 8-10 join the cartilage above: the costal margin
                phi1, z1 = np.radians(168.0 - 8.0 * (k - 7)), attach[6] - 8.0 * s * (k - 6)
            u = np.linspace(0.0, 1.0, 10)
            z = z0 + (z1 - z0) * u ** 1.6  # runs on, then rises to the sternum
            cartilage += _chain(t.surface_point(side, phi0 + (phi1 - phi0) * u, z), 4.5 * s)
    canvas.paint_region(canvas.union_of_capsules(cartilage), float(rng.uniform(80.0, 140.0)))

    ribs = []
    for side in (1.0, -1.0):
        for k in range(12):
            phi = np.radians(np.arange(RIB_START_DEG, RIB_END_DEG[k] + 0.1, 5.0))
            arc = t.surface_point(side, phi, t.rib_height(k, phi))
            x_v, y_v = t.spine(t.rib_z[k])
            w, d = t.vertebra_size(t.rib_z[k])
            head = np.array([x_v + side * (w + 2.0), y_v, t.rib_z[k] + 4.0 * s])
            tubercle = np.array([x_v + side * (w + 18.0 * s), y_v - d - 6.0 * s, t.rib_z[k] + 2.0 * s])
            ribs += _chain(np.vstack([head, tubercle, arc]), (2.6 if k >= 10 else 3.2) * s)
    rib_sdf = canvas.union_of_capsules(ribs, z_scale=0.58)
    rib_occ = np.zeros(canvas.hu.shape, np.float32)
    _bone(canvas, rib_sdf, cortical=rib_density * cortical, inner=rib_density * marrow, shell_mm=1.0, record=rib_occ)

    _paint_sternum(canvas, t, st_top, cortical=0.8 * cortical, marrow=marrow)
    _paint_spine(canvas, t, rng, cortical=cortical, marrow=marrow, hu=hu)
    for side in (1.0, -1.0):
        glenoid = _paint_scapula(canvas, t, side, cortical=cortical, hu=hu)
        lift = 25.0 * s if t.arms_raised else 0.0
        clavicle = np.array([[side * 20 * s, t.y_c + t.cage(st_top)[1] + 2 * s, st_top + 6 * s],
                             [side * 60 * s, t.y_c + 0.95 * t.b_max, st_top + 10 * s + 0.2 * lift],
                             [side * 105 * s, t.y_c + 0.5 * t.b_max, st_top + 16 * s + 0.6 * lift],
                             glenoid + np.array([side * 2.0 * s, 12.0 * s, 24.0 * s])])
        fine = np.vstack([np.interp(np.linspace(0, 3, 13), np.arange(4), clavicle[:, i]) for i in range(3)]).T
        _bone(canvas, canvas.union_of_capsules(_chain(fine, 6.5 * s)), cortical=cortical, inner=marrow, shell_mm=1.5)
        _paint_humerus(canvas, t, side, cortical=1.1 * cortical, marrow=float(rng.uniform(-60, 80)),
                       head_hu=marrow)
    return rib_occ


def _paint_sternum(canvas: Canvas, t: Thorax, st_top: float, *, cortical: float, marrow: float) -> None:
    s = t.s

    def sdf(x, y, z):
        _, b = t.cage(z)
        half_width = np.where(z > st_top - 48 * s, 26 * s, 15 * s) - 6.0 * s * ((st_top - 140 * s - z) / (20 * s)).clip(0, 1)
        return intersect(np.abs(x) - half_width, np.abs(y - (t.y_c + b + 2.0 * s)) - 6.0 * s, z - st_top,
                         st_top - 160.0 * s - z)

    region = canvas.region((-30 * s, t.y_c + 0.4 * t.b_max, st_top - 165 * s), (30 * s, t.y_c + 1.3 * t.b_max, st_top + 2),
                           sdf)
    _bone(canvas, region, cortical=cortical, inner=marrow, shell_mm=1.2)


def _paint_spine(canvas: Canvas, t: Thorax, rng: np.random.Generator, *, cortical: float, marrow: float,
                 hu: dict[str, float]) -> None:
    """Discs and canal as columns, then per vertebra the body (cortex over cancellous bone) and its
    processes (one union of capsules, a cortical-marrow mixture)."""
    s = t.s
    pitch = 30.0 * s
    levels = list(t.rib_z[0] + pitch * np.arange(3, 0, -1)) + list(t.rib_z) + list(t.rib_z[-1] - pitch * np.arange(1, 4))
    z_all = np.array(levels)

    def column(x, y, z, grow: float):
        x_v, y_v = t.spine(z)
        w, d = t.vertebra_size(z)
        return ellipse_sdf(x - x_v, y - y_v, w + grow, d + grow)

    def canal(x, y, z):
        x_v, y_v = t.spine(z)
        _, d = t.vertebra_size(z)
        return ellipse_sdf(x - x_v, y - (y_v - d - 9.0 * s), 8.0 * s, 7.0 * s)

    lo, hi = (-70 * s + min(0, t.scoliosis_mm), t.y_c - 1.6 * t.b_max, z_all.min() - pitch), \
             (70 * s + max(0, t.scoliosis_mm), t.y_c, z_all.max() + pitch)
    canvas.paint_in_box(lo, hi, lambda x, y, z: column(x, y, z, 0.0), hu["disc"])
    canvas.paint_in_box(lo, hi, canal, hu["canal"])
    bodies = canvas.region(lo, hi)
    processes = []
    for z_level in z_all:
        zc, half = z_level - 0.3 * pitch, 0.4 * pitch
        found = canvas.box((lo[0], lo[1], zc - half), (hi[0], hi[1], zc + half))
        if found is not None and bodies is not None:
            slices, (x, y, z) = found
            local = tuple(slice(a.start - o.start, a.stop - o.start) for a, o in zip(slices, bodies[0]))
            d = np.broadcast_to(intersect(column(x, y, z, 0.0), np.abs(z - zc) - half), bodies[1][local].shape)
            np.minimum(bodies[1][local], d, out=bodies[1][local])
        x_v, y_v = (float(v) for v in t.spine(zc))
        w, d = (float(v) for v in t.vertebra_size(zc))
        lamina = np.array([x_v, y_v - d - 19.0 * s, zc])
        for side in (1.0, -1.0):
            pedicle = np.array([x_v + side * 0.55 * w, y_v - d + 2.0 * s, zc + 0.15 * half])
            root = np.array([x_v + side * 0.55 * w, y_v - d - 11.0 * s, zc])
            tip = np.array([x_v + side * (w + 22.0 * s), y_v - d - 17.0 * s, zc + 4.0 * s])
            processes += [(pedicle, root, 3.8 * s), (root, lamina, 3.2 * s), (root, tip, 4.0 * s)]
        processes.append((lamina, lamina + np.array([0.0, -24.0 * s, -18.0 * s]), 3.5 * s))
    canvas.paint_region(canvas.union_of_capsules(processes), float(rng.uniform(0.35, 0.45) * cortical))
    _bone(canvas, bodies, cortical=0.65 * cortical, inner=marrow, shell_mm=1.0)


def _paint_scapula(canvas: Canvas, t: Thorax, side: float, *, cortical: float, hu: dict[str, float]) -> np.ndarray:
    """One scapula; returns the glenoid centre (mm), where the humeral head and the clavicle meet it."""
    s, lay = t.s, t.scapula_layout()
    z_sup, z_inf, z_glen, offset = lay["z_sup"], lay["z_inf"], lay["z_glen"], lay["offset"]
    phi_med, phi_inf, phi_glen = lay["phi_med"], lay["phi_inf"], lay["phi_glen"]

    def plate(x, y, z):
        a, b = t.cage(z)
        phi = np.arctan2(side * x, -(y - t.y_c)).clip(0, None)
        radius = 0.5 * (a + b)
        f = ((z - z_inf) / (z_glen - z_inf)).clip(0, 1)
        lateral = (phi_inf + (phi_glen - phi_inf) * f - phi) * radius
        g = ((z - z_inf) / (z_sup - z_inf)).clip(0, 1)
        medial = (phi - (phi_inf + (phi_med - phi_inf) * g)) * radius
        shell = np.abs(ellipse_sdf(x, y - t.y_c, a + offset, b + offset)) - 1.6 * s
        return intersect(shell, -lateral, -medial, z - z_sup - 10.0 * s * (phi - phi_med).clip(0, None), z_inf - z)

    lo = (min(side * 20, side * (t.a_max + 40)), t.y_c - t.b_max - 40, z_inf - 10)
    hi = (max(side * 20, side * (t.a_max + 40)), t.y_c + 20, z_glen + 30)
    canvas.paint_in_box(lo, hi, plate, hu["scapula"])
    glenoid = t.glenoid(side)
    border = np.vstack([t.surface_point(side, np.linspace(phi_inf, phi_glen - 0.2, 7), np.linspace(z_inf, z_glen - 25, 7),
                                        offset=offset), glenoid])
    z_spine = z_sup - 0.28 * (z_sup - z_inf)
    spine = t.surface_point(side, np.linspace(phi_med + 0.05, phi_glen, 6), np.linspace(z_spine, z_glen + 18, 6),
                            offset=offset + 6.0 * s)
    acromion = glenoid + np.array([side * 8.0, 14.0, 24.0]) * s
    coracoid = glenoid + np.array([-side * 12.0, 30.0, 8.0]) * s
    parts = _chain(border, 4.5 * s) + _chain(np.vstack([spine, acromion]), 4.0 * s) + [(glenoid, coracoid, 4.5 * s)]
    canvas.paint_region(canvas.union_of_capsules(parts), 0.5 * cortical)
    canvas.paint_in_box(glenoid - 20 * s, glenoid + 20 * s,
                        lambda x, y, z: ellipsoid_sdf(x, y, z, glenoid, np.array([9.0, 13.0, 17.0]) * s), 0.5 * cortical)
    return glenoid


def _paint_humerus(canvas: Canvas, t: Thorax, side: float, *, cortical: float, marrow: float, head_hu: float) -> None:
    s = t.s
    centre, direction = t.humerus(side)
    neck, end = centre + 30.0 * s * direction, centre + 320.0 * s * direction
    _bone(canvas, canvas.union_of_capsules([(neck, end, 11.0 * s)]), cortical=cortical, inner=marrow, shell_mm=3.5)
    head = canvas.region(centre - 25 * s, centre + 25 * s, lambda x, y, z: ellipsoid_sdf(x, y, z, centre, [23.0 * s] * 3))
    _bone(canvas, head, cortical=0.7 * cortical, inner=head_hu, shell_mm=1.5)
