"""Below the skull base: neck muscle, pharynx, mouth, palate, jaws, teeth, C1-C3 and the spinal canal.

Painted on top of :func:`pipeline.data.phantoms.anatomy.paint_head` (which builds the skull as a shell all
the way down) by the detailed head (:mod:`pipeline.data.phantoms.detailed_head`):

1. below the occiput and the maxilla the skull shell gives way to neck and face muscle;
2. air: nasopharynx and oropharynx (size varies, in front of the spine), a layer between tongue and
   palate in some subjects, between the teeth when the mouth is open;
3. bone: hard palate, upper and lower alveolar arches (cortex and marrow), mandible body and rami up to
   the condyles in front of the ear canals; foramen magnum with the occipital condyles; C1 (arches,
   lateral masses, transverse processes), C2 (dens, body, lamina, spinous process), C3; the spinal
   canal (CSF) with the cord;
4. teeth along the arches (enamel crowns over dentine, roots in the alveolar bone), a few missing.

Frame mm (+x right, +y anterior, +z superior); channels = :class:`~pipeline.data.phantoms.head_tissues.HeadTissue`.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.phantoms.anatomy import HeadLayout, ellipsoid_sdf, front_y
from pipeline.data.phantoms.head_tissues import HeadTissue as T
from pipeline.data.phantoms.skull_base import Ear, Region, capsule_sdf, region

__all__ = ["paint_jaw_and_neck"]

CROWN_MM = 8.0  # crown height
ENAMEL_MM = 1.3
TEETH_PER_SIDE = 7


def _bone(layout: HeadLayout, sdf: np.ndarray, reg: Region, cortex_mm: float = 1.5) -> None:
    """A bone with a cortical shell and a marrow core ``cortex_mm`` inside it."""
    layout.canvas.paint(T.CORTICAL_BONE, sdf, reg.box)
    layout.canvas.paint(T.MARROW, sdf + cortex_mm, reg.box)


def _arch_distance(q, y_front: float, k: float) -> np.ndarray:
    """Distance (mm, in the axial plane) to the dental arch's centre line ``y = y_front - k x^2``."""
    return np.abs(q[1] - (y_front - k * q[0] ** 2)) / np.sqrt(1.0 + (2.0 * k * q[0]) ** 2)


def _teeth(rng: np.random.Generator, q, *, y_front: float, k: float, x_end: float, z_crown: float,
           up: bool) -> tuple[np.ndarray, np.ndarray]:
    """SDFs (unions) of the enamel and of the dentine (crown core and root) of one jaw's teeth.

    Teeth sit at equal arc lengths along the arch (incisors narrow and thin, molars wide and thick);
    ``z_crown`` is the biting surface, the crown grows away from it and the root continues into the jaw
    (``up``: an upper tooth, its root points up). About one tooth in 15 is missing.
    """
    xs = np.linspace(0.0, x_end, 400)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(xs), np.diff(k * xs**2)))])
    pitch = arc[-1] / TEETH_PER_SIDE
    sign = 1.0 if up else -1.0
    enamel = np.full(q[0].shape, np.inf, dtype=np.float32)
    dentine = np.full(q[0].shape, np.inf, dtype=np.float32)
    for side in (-1.0, 1.0):
        for i in range(TEETH_PER_SIDE):
            missing = rng.uniform() < 1.0 / 15.0
            x0 = float(np.interp((i + 0.5) * pitch, arc, xs))
            tangent = np.array([1.0, -2.0 * k * x0]) / np.hypot(1.0, 2.0 * k * x0)
            if missing:
                continue
            along, across = 0.45 * pitch, 3.0 + 2.0 * i / (TEETH_PER_SIDE - 1)
            dx, dy = q[0] - side * x0, q[1] - (y_front - k * x0**2)
            local = (dx * side * tangent[0] + dy * tangent[1], -dx * side * tangent[1] + dy * tangent[0], q[2])
            crown_z = z_crown + sign * CROWN_MM / 2.0
            crown = ellipsoid_sdf(local, (0.0, 0.0, crown_z), (along, across, CROWN_MM / 2.0))
            root_len = rng.uniform(10.0, 15.0)
            root = ellipsoid_sdf(local, (0.0, 0.0, crown_z + sign * (root_len / 2.0 + 2.0)),
                                 (0.55 * along, 0.6 * across, root_len / 2.0 + 1.0))
            enamel = np.minimum(enamel, crown)
            dentine = np.minimum(dentine, np.minimum(crown + ENAMEL_MM, root))
    return enamel, dentine


def paint_jaw_and_neck(rng: np.random.Generator, layout: HeadLayout, ear: Ear) -> None:
    """Paint everything listed in the module docstring onto ``layout.canvas`` (order matters: later wins)."""
    paint = layout.canvas.paint
    cx, cy, cz = layout.nasal_centre
    ax, ay, az = layout.nasal_semi
    z_palate, y_choana = cz - az, cy - ay  # nasal floor = top of the hard palate; back of the nasal cavity
    slope = (layout.z_base_ant - layout.z_base_post) / (layout.y_ant - layout.y_post)
    far = 400.0  # frame mm beyond any grid: "to the edge of the field of view"

    # 1. neck and lower face: muscle inside the subcutaneous fat, no skull shell
    z_back, z_face = layout.z_base_post - 4.0, z_palate - 4.0
    reg = region(layout, (-far, -far, -far), (far, far, max(z_back, z_face) + 1.0))
    if reg is None:
        return
    below = (reg.q[1] - (y_choana - 4.0)) / 5.0
    z_cut = z_back + (z_face - z_back) / (1.0 + np.exp(-np.clip(below, -30.0, 30.0)))
    paint(T.MUSCLE, np.maximum(reg.crop(layout.d_outer) - reg.crop(layout.depth), reg.q[2] - z_cut), reg.box)

    # the mouth's geometry (drawn here, used below)
    pal_t = rng.uniform(4.0, 7.0)
    y_front = front_y(layout.head_semi, 0.0, z_palate - 12.0) - rng.uniform(9.0, 13.0)
    k, x_arch, ridge_h = rng.uniform(0.045, 0.06), rng.uniform(25.0, 29.0), rng.uniform(8.0, 11.0)
    z_occ = z_palate - ridge_h - CROWN_MM  # biting surface of the upper teeth
    gap = rng.uniform(1.0, 8.0) if rng.uniform() < 0.5 else 0.0  # mouth opening
    z_low = z_occ - gap  # biting surface of the lower teeth
    tongue_air = rng.uniform(1.5, 6.0) if rng.uniform() < 0.6 else 0.0
    y_fm = layout.y_post + 8.0 + rng.uniform(-3.0, 3.0)  # foramen magnum / spinal canal (y)
    z_fm = layout.z_base_post + slope * max(y_fm - layout.y_post, 0.0)
    spine = rng.uniform(0.9, 1.1)
    pharynx = (rng.uniform(8.0, 16.0), rng.uniform(3.5, 9.0))  # oropharynx half-width, half-depth
    inside = lambda r: r.crop(layout.d_fat) + 0.5 - r.crop(layout.depth)  # noqa: E731  (< 0 under the fat)

    # 2. air: mouth (open bite, above the tongue), nasopharynx, oropharynx
    reg = region(layout, (-x_arch - 12, y_front - k * (x_arch + 6) ** 2 - 12, z_low - 20),
                 (x_arch + 12, y_front + 12, z_palate + 2))
    if reg is not None:
        behind_lips = reg.q[1] - (y_front + 4.0)
        oral = np.maximum((np.hypot(reg.q[0] / (x_arch + 4.0), (reg.q[1] - y_front + 24.0) / 30.0) - 1.0) * 30.0,
                          behind_lips)  # inside the arches, behind the lips
        if gap > 0:
            paint(T.SINUS_AIR, np.maximum(oral, np.abs(reg.q[2] - (z_occ - gap / 2)) - gap / 2), reg.box)
        if tongue_air > 0:
            dorsum = z_palate - pal_t - tongue_air / 2
            paint(T.SINUS_AIR, np.maximum(ellipsoid_sdf(reg.q, (0.0, y_front - 22.0, dorsum),
                                                         (x_arch - 6.0, 22.0, tongue_air / 2)), behind_lips), reg.box)
    y_pharynx = y_fm + 24.0 * spine + pharynx[1]
    reg = region(layout, (-30, y_pharynx - 20, -far), (30, y_choana + 14, z_palate + 22))
    if reg is not None:
        naso = ellipsoid_sdf(reg.q, (0.0, (y_choana + y_pharynx) / 2, z_palate + 6.0),  # opens into the nose
                             (12.0, max((y_choana - y_pharynx) / 2 + 12.0, 6.0), 13.0))
        oro = np.maximum(np.hypot(reg.q[0] / pharynx[0], (reg.q[1] - y_pharynx) / pharynx[1]) - 1.0,
                         (reg.q[2] - z_palate) / 10.0) * min(pharynx)
        paint(T.SINUS_AIR, np.maximum(np.minimum(naso, oro), inside(reg)), reg.box)

    # 3. bone: palate, upper arch, mandible with rami and condyles
    reg = region(layout, (-80, -60, -far), (80, y_front + 14, z_palate + 2))
    if reg is not None:
        behind_arch = reg.q[1] - (y_front - k * reg.q[0] ** 2)
        palate = np.maximum.reduce([np.abs(reg.q[2] - (z_palate - pal_t / 2)) - pal_t / 2, behind_arch,
                                    np.abs(reg.q[0]) - x_arch - 2.0, y_choana - reg.q[1]])
        _bone(layout, palate, reg, cortex_mm=1.2)
        upper = np.maximum.reduce([_arch_distance(reg.q, y_front, k) - 5.5, np.abs(reg.q[0]) - x_arch - 4.0,
                                   reg.q[2] - z_palate, (z_palate - ridge_h - 1.0) - reg.q[2]])
        _bone(layout, upper, reg)
        y_low = y_front - 2.0
        lower = np.maximum.reduce([_arch_distance(reg.q, y_low, k) - 6.5, np.abs(reg.q[0]) - x_arch - 6.0,
                                   reg.q[2] - (z_low - 1.0), (z_low - 30.0) - reg.q[2]])
        jaw = lower
        for side in (-1.0, 1.0):
            end = np.array([side * (x_arch + 4.0), y_low - k * (x_arch + 4.0) ** 2, z_low - 14.0])
            angle = end + np.array([side * 12.0, -12.0, -10.0])
            condyle = np.array([side * 0.66 * layout.head_semi[0], ear.y + 12.0, ear.z - 7.0])
            jaw = np.minimum.reduce([jaw, capsule_sdf(reg.q, end, angle, 6.0), capsule_sdf(reg.q, angle, condyle, 4.5),
                                     ellipsoid_sdf(reg.q, condyle, (9.0, 5.0, 5.0))])
        _bone(layout, np.maximum(jaw, inside(reg)), reg)

        # 4. teeth of both jaws
        for y0, z_bite, up in ((y_front, z_occ, True), (y_low, z_low, False)):
            enamel, dentine = _teeth(rng, reg.q, y_front=y0, k=k, x_end=x_arch, z_crown=z_bite, up=up)
            paint(T.ENAMEL, enamel, reg.box)
            paint(T.DENTINE, dentine, reg.box)

    # 5. cervical spine, foramen magnum, canal and cord
    s = spine
    z1 = z_fm - 13.0 * s
    parts = [((0, 17, z1 - z_fm), (9, 3.5, 5)), ((0, -18, z1 - z_fm + 1), (15, 3.5, 4)),  # C1 arches
             *(((side * 19, 3, z1 - z_fm), (7, 10, 8)) for side in (-1, 1)),  # C1 lateral masses
             *(((side * 32, 1, z1 - z_fm), (7, 4, 4)) for side in (-1, 1)),  # C1 transverse processes
             *(((side * 14, 4, -3), (6, 9, 5)) for side in (-1, 1)),  # occipital condyles
             ((0, 12.5, z1 - z_fm - 2), (5, 5, 10)), ((0, 12, z1 - z_fm - 20), (8.5, 8, 10)),  # C2 dens, body
             *(((side * 15, 3, z1 - z_fm - 16), (6, 9, 7)) for side in (-1, 1)),  # C2 lateral parts
             ((0, -16, z1 - z_fm - 18), (13, 4, 6)), ((0, -27, z1 - z_fm - 22), (6, 10, 6)),  # C2 lamina, spinous
             ((0, 12, z1 - z_fm - 42), (8.5, 8, 7.5)), ((0, -15, z1 - z_fm - 42), (14, 4, 6)),  # C3
             ((0, -26, z1 - z_fm - 45), (5, 10, 5))]
    reg = region(layout, (-50, y_fm - 50, -far), (50, y_fm + 35, z_fm + 30))
    if reg is None:
        return
    vertebrae = np.full(reg.q[0].shape, np.inf, dtype=np.float32)
    for offset, semi in parts:
        centre = (offset[0] * s, y_fm + offset[1] * s, z_fm + offset[2])
        vertebrae = np.minimum(vertebrae, ellipsoid_sdf(reg.q, centre, np.asarray(semi, dtype=float) * s))
    _bone(layout, np.maximum(vertebrae, inside(reg)), reg, cortex_mm=1.3)
    plate = np.abs(reg.q[2] - (reg.crop(layout.z_base) + layout.t_base / 2)) / reg.crop(layout.base_norm)
    hole = np.hypot(reg.q[0] / 14.0, (reg.q[1] - y_fm) / 17.0) - 1.0
    paint(T.CSF, np.maximum(hole * 14.0, plate - layout.t_base / 2 - 1.0), reg.box)  # foramen magnum
    top, bottom = (0.0, y_fm + 2.0, z_fm + 20.0), (0.0, y_fm, -far)
    paint(T.CSF, np.maximum(capsule_sdf(reg.q, (0.0, y_fm, z_fm), bottom, 8.0 * s), inside(reg)), reg.box)
    paint(T.WHITE_MATTER, np.maximum(capsule_sdf(reg.q, top, bottom, 5.5 * s), inside(reg)), reg.box)
