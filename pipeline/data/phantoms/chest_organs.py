"""The chest phantom's circulation and abdomen, with or without iodine contrast.

:func:`draw_contrast` picks one subject's contrast state (none, venous or arterial phase, and in some
an undiluted bolus in the injected arm's veins and the superior vena cava): the CT numbers of the left
and right heart blood, the systemic veins and the enhancing organs. Iodine raises blood above the HU at
which the DRR's material split starts calling a voxel bone (100 HU), so an enhanced heart, aorta or
bolus shows in the DE bone image, as in the real chest CT (docs/xray_physics.md, section 2).

:func:`paint_abdomen` paints what lies under the diaphragm (liver, spleen, stomach with its gas
bubble, kidneys, bowel gas); :func:`paint_heart_and_vessels` the heart (myocardium and four
chambers), the aorta and its arch branches, the superior and inferior venae cavae, brachiocephalic and
subclavian veins, the pulmonary trunk and arteries, the pulmonary veins, and the lung vessel trees
branching from the hila. All in the anatomical frame of :class:`pipeline.data.phantoms.chest_skeleton.Thorax`.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.phantoms.chest_skeleton import Thorax
from pipeline.data.phantoms.shapes import Canvas, capsule_sdf, ellipsoid_sdf, rotation

__all__ = ["CONTRAST_PHASES", "draw_contrast", "paint_abdomen", "paint_heart_and_vessels"]

#: Contrast phases and their probabilities.
CONTRAST_PHASES = {"none": 0.3, "venous": 0.3, "arterial": 0.4}


def draw_contrast(rng: np.random.Generator, phase: str | None = None) -> dict[str, float | str | bool]:
    """HU of blood and enhancing organs for one subject (keys: phase, left, right, vein, liver, spleen,
    kidney, myocardium, bolus, bolus_hu, bolus_side). ``phase`` forces one of :data:`CONTRAST_PHASES`;
    every value is drawn either way, so the rest of the subject does not change with it."""
    drawn = str(rng.choice(list(CONTRAST_PHASES), p=list(CONTRAST_PHASES.values())))
    if phase is not None and phase not in CONTRAST_PHASES:
        raise ValueError(f"contrast phase must be one of {list(CONTRAST_PHASES)}, got {phase!r}")
    phase = phase or drawn
    venous_level, arterial_level = rng.uniform(120.0, 220.0), rng.uniform(220.0, 450.0)
    u = rng.uniform(size=10)
    blood = {
        "none": {"left": 40.0, "right": 40.0, "vein": 40.0, "liver": 60.0, "spleen": 45.0, "kidney": 35.0,
                 "myocardium": 45.0},
        "venous": {"left": venous_level, "right": venous_level * (0.9 + 0.2 * u[0]),
                   "vein": venous_level * (0.8 + 0.2 * u[1]), "liver": 95.0 + 35.0 * u[2],
                   "spleen": 110.0 + 50.0 * u[3], "kidney": 140.0 + 80.0 * u[4], "myocardium": 80.0 + 30.0 * u[5]},
        "arterial": {"left": arterial_level, "right": arterial_level * (0.6 + 0.6 * u[0]), "vein": 60.0 + 60.0 * u[1],
                     "liver": 60.0 + 35.0 * u[2], "spleen": 130.0 + 90.0 * u[3], "kidney": 170.0 + 130.0 * u[4],
                     "myocardium": 90.0 + 50.0 * u[5]},
    }[phase]
    bolus = phase != "none" and bool(u[6] < 0.5)
    return {"phase": phase, **{k: float(v) for k, v in blood.items()}, "bolus": bolus,
            "bolus_hu": float(700.0 + 1800.0 * u[7]) if bolus else 0.0, "bolus_side": 1.0 if u[8] < 0.5 else -1.0}


def paint_abdomen(canvas: Canvas, t: Thorax, rng: np.random.Generator, below: np.ndarray, domes: dict[float, float],
                  contrast: dict, hu: dict[str, float]) -> np.ndarray:
    """Organs under the diaphragm (``below``: signed distance of the abdominal cavity); returns the
    abdomen's occupancy (for the behind-the-diaphragm tumour placement)."""
    s = t.s
    x, y, z = canvas.q
    occ = canvas.paint(below, hu["muscle"]).copy()
    canvas.paint(np.maximum(below, -25.0 * s - x), contrast["liver"])  # liver: right of ~2.5 cm left of midline
    spleen = (-0.7 * t.a_max, t.y_c - 0.55 * t.b_max, domes[-1.0] - 45.0 * s)
    canvas.paint_in_box(np.subtract(spleen, 70), np.add(spleen, 70), lambda x, y, z: ellipsoid_sdf(
        x, y, z, spleen, np.array([30.0, 45.0, 55.0]) * s, rotation(35.0)), contrast["spleen"], within=below)
    stomach = (-45.0 * s, t.y_c + 0.1 * t.b_max, domes[-1.0] - 50.0 * s)
    canvas.paint_in_box(np.subtract(stomach, 80), np.add(stomach, 80),
                        lambda x, y, z: ellipsoid_sdf(x, y, z, stomach, np.array([55.0, 40.0, 60.0]) * s), 35.0,
                        within=below)
    bubble = (-55.0 * s, t.y_c + 0.2 * t.b_max, domes[-1.0] - 20.0 * s)
    size = rng.uniform(0.4, 1.2)
    canvas.paint_in_box(np.subtract(bubble, 50), np.add(bubble, 50), lambda x, y, z: ellipsoid_sdf(
        x, y, z, bubble, np.array([34.0, 30.0, 16.0]) * s * size), hu["air"])
    for side in (1.0, -1.0):  # kidneys: posterior, the right one lower (under the liver)
        kidney = (side * 70.0 * s, t.y_c - 0.75 * t.b_max, domes[side] - (150.0 + 15.0 * (side > 0)) * s)
        canvas.paint_in_box(np.subtract(kidney, 70), np.add(kidney, 70), lambda x, y, z, c=kidney, sd=side: ellipsoid_sdf(
            x, y, z, c, np.array([28.0, 25.0, 55.0]) * s, rotation(sd * 25.0, 0.0, 0.0)), contrast["kidney"])
    for _ in range(int(rng.integers(0, 5))):  # bowel gas (colon flexures)
        pocket = (rng.uniform(-0.8, 0.8) * t.a_max, t.y_c + rng.uniform(0.0, 0.6) * t.b_max,
                  min(domes.values()) - rng.uniform(60.0, 160.0) * s)
        semi = rng.uniform(8.0, 22.0, 3) * s
        canvas.paint_in_box(np.subtract(pocket, 30), np.add(pocket, 30), lambda x, y, z, c=pocket, r=semi: ellipsoid_sdf(
            x, y, z, c, r), hu["air"], within=below)
    return occ


def _frame(direction) -> np.ndarray:
    """Rotation whose first row is ``direction`` (normalised)."""
    u = np.asarray(direction, float) / np.linalg.norm(direction)
    helper = np.array([0.0, 0.0, 1.0]) if abs(u[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    v = np.cross(u, helper)
    v /= np.linalg.norm(v)
    return np.stack([u, v, np.cross(u, v)])


def _tube(canvas: Canvas, points, radius: float, value: float) -> None:
    points = np.asarray(points, float)
    canvas.paint_region(canvas.union_of_capsules([(p0, p1, radius) for p0, p1 in zip(points[:-1], points[1:])]), value)


def paint_heart_and_vessels(canvas: Canvas, t: Thorax, rng: np.random.Generator, domes: dict[float, float],
                            contrast: dict, hu: dict[str, float], lung_occ: np.ndarray,
                            ) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Heart, great vessels and lung vessel trees (into the lung left free, ``lung_occ`` less what the
    canvas has claimed since); returns the heart's occupancy and the two hila (mm)."""
    s = t.s
    left, right, vein = contrast["left"], contrast["right"], contrast["vein"]
    centre = np.array([-32.0 * s + rng.uniform(-6, 6), t.y_c + 0.2 * t.b_max, domes[-1.0] + 48.0 * s])
    axes = _frame([-0.55, 0.5, -0.55 + rng.uniform(-0.15, 0.15)])
    semi = np.array([62.0, 46.0, 50.0]) * s * rng.uniform(0.9, 1.12)
    lo, hi = centre - semi.max() - 10, centre + semi.max() + 10
    heart_occ = np.zeros(canvas.hu.shape, np.float32)
    canvas.paint_in_box(lo, hi, lambda x, y, z: ellipsoid_sdf(x, y, z, centre, semi, axes), contrast["myocardium"],
                        record=heart_occ)
    chambers = {  # (offset along the heart axes in units of semi, half-axes as fractions of semi, blood)
        "lv": ((0.2, -0.15, -0.1), (0.62, 0.5, 0.55), left), "rv": ((0.05, 0.45, 0.3), (0.6, 0.35, 0.45), right),
        "la": ((-0.55, -0.35, -0.15), (0.4, 0.45, 0.5), left), "ra": ((-0.45, 0.35, 0.5), (0.45, 0.4, 0.45), right)}
    for offset, fraction, blood in chambers.values():
        c = centre + axes.T @ (np.asarray(offset) * semi)
        canvas.paint_in_box(lo, hi, lambda x, y, z, c=c, f=fraction: ellipsoid_sdf(x, y, z, c, np.asarray(f) * semi, axes),
                            blood)
    ra = centre + axes.T @ (np.array([-0.45, 0.35, 0.5]) * semi)

    arch_z = t.rib_z[0] - 62.0 * s
    y_spine = float(t.spine(arch_z)[1])
    root = centre + axes.T @ (np.array([-0.35, 0.1, -0.05]) * semi)
    desc = np.array([-24.0 * s, y_spine + 24.0 * s, arch_z])
    r_ao = 13.5 * s * rng.uniform(0.9, 1.2)
    _tube(canvas, [root, [8 * s, root[1] + 5, root[2] + 40 * s], [8 * s, t.y_c + 0.15 * t.b_max, arch_z + 8 * s],
                   [-10 * s, t.y_c - 0.25 * t.b_max, arch_z + 22 * s], desc, desc - [0, 0, 400]], r_ao, left)
    for x0, y0 in ((4.0, 0.0), (-10.0, -0.2), (-20.0, -0.35)):  # brachiocephalic trunk, left carotid, left subclavian
        start = np.array([x0 * s, t.y_c + y0 * t.b_max, arch_z + 18 * s])
        _tube(canvas, [start, start + [x0 * 1.5 * s, 0, 60 * s], start + [x0 * 1.5 * s, 0, 200 * s]], 5.5 * s, left)

    # Systemic veins: IVC, SVC, brachiocephalic and subclavian veins; a bolus fills the injected side.
    _tube(canvas, [ra, ra + [5 * s, -20 * s, -60 * s], ra + [5 * s, -25 * s, -300 * s]], 11.0 * s, vein)
    svc_top = np.array([30.0 * s, t.y_c + 0.1 * t.b_max, arch_z + 35 * s])
    for side in (1.0, -1.0):
        hu_side = contrast["bolus_hu"] if contrast["bolus"] and side == contrast["bolus_side"] else vein
        sub = [svc_top + [side * 5 - 5, 0, 5 * s], [side * 55 * s, t.y_c + 0.45 * t.b_max, t.rib_z[0] - 8 * s],
               [side * 110 * s, t.y_c + 0.25 * t.b_max, t.rib_z[0] - (0 if t.arms_raised else 20) * s],
               [side * 190 * s, t.y_c, t.rib_z[0] + (60 if t.arms_raised else -35) * s]]
        _tube(canvas, sub, (6.0 if side < 0 else 7.0) * s, hu_side)
    svc_hu = contrast["bolus_hu"] if contrast["bolus"] else vein
    _tube(canvas, [svc_top, ra], 10.0 * s, 0.5 * (svc_hu + right) if contrast["bolus"] else vein)
    _tube(canvas, [svc_top, svc_top + (ra - svc_top) * 0.45], 10.0 * s, svc_hu)

    # Pulmonary trunk and arteries (right heart), pulmonary veins (left heart), trees from the hila.
    carina = np.array([0.0, y_spine + 40.0 * s, arch_z - 20.0 * s])
    hila = {side: carina + [side * 52.0 * s, -6.0 * s, -28.0 * s] for side in (1.0, -1.0)}
    rv = centre + axes.T @ (np.array([0.05, 0.45, 0.3]) * semi)
    bifurcation = np.array([-12.0 * s, carina[1] + 22 * s, arch_z - 22.0 * s])
    _tube(canvas, [rv, bifurcation], 13.0 * s, right)
    for side in (1.0, -1.0):
        _tube(canvas, [bifurcation, hila[side] + [0, 8 * s, 6 * s]], 9.5 * s, right)
        la = centre + axes.T @ (np.array([-0.55, -0.35, -0.15]) * semi)
        for dz in (12.0, -18.0):
            _tube(canvas, [hila[side] + [side * 10 * s, -8 * s, dz * s], la], 6.0 * s, left)
    canvas.paint_in_box(carina - [12, 12, 0], carina + [12, 12, 300], lambda x, y, z: capsule_sdf(
        x, y, z, carina, carina + [0, 4 * s, 300], 9.0 * s), hu["air"])
    for side in (1.0, -1.0):
        canvas.paint_in_box(np.minimum(carina, hila[side]) - 10, np.maximum(carina, hila[side]) + 10,
                            lambda x, y, z, h=hila[side]: capsule_sdf(x, y, z, carina, h, 6.0 * s), hu["air"])
    free_lung = lung_occ * (1.0 - canvas.claimed) if canvas.claimed is not None else lung_occ
    for side in (1.0, -1.0):
        _vessel_tree(canvas, rng, hila[side], side, s, 0.5 * (left + right), free_lung)
    return heart_occ, hila


def _vessel_tree(canvas: Canvas, rng: np.random.Generator, hilum, side: float, s: float, value: float,
                 free_lung: np.ndarray) -> None:
    """Pulmonary vessels: 5 trunks from the hilum, each branching 4 times (lengths x0.72, radii x0.7),
    painted only into ``free_lung`` (0..1) so they never cover the heart or mediastinum."""
    stack = []
    for direction in ([side * 0.5, 0.1, 0.85], [side, 0.3, 0.1], [side, -0.4, 0.0], [side * 0.6, -0.1, -0.8],
                      [side * 0.3, -0.7, -0.6]):
        unit = np.asarray(direction) / np.linalg.norm(direction)
        stack.append((np.asarray(hilum, float), unit, 42.0 * s, 5.0 * s, 0))
    while stack:
        start, direction, length, radius, depth = stack.pop()
        end = start + direction * length
        canvas.paint_in_box(np.minimum(start, end) - radius, np.maximum(start, end) + radius,
                            lambda x, y, z, a=start, b=end, r=radius: capsule_sdf(x, y, z, a, b, r), value,
                            where=free_lung)
        if depth < 4:
            for _ in range(2):
                child = direction + rng.normal(0.0, 0.45, 3)
                stack.append((end, child / np.linalg.norm(child), 0.72 * length, 0.7 * radius, depth + 1))
