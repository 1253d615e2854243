"""Chest CT phantoms with lung tumours: the embedded default data of the SE -> DE chest X-ray task.

``make_chest_subject(seed=..., size=...)`` paints one thorax in an anatomical frame (mm; RAS: +x = the
patient's right, +y anterior, +z superior, origin at the centre of the field of view), structure after
structure, each from an approximate signed distance (mm, negative inside) with a one-voxel linear
partial-volume ramp, later structures replacing earlier ones:

body (fat) -> breasts (some subjects) -> chest-wall muscle -> thoracic cavity (mediastinum) -> lungs
(density gradient, texture) -> abdomen under the diaphragm (liver on the right, stomach with a gas
bubble on the left) -> heart, aorta, superior vena cava -> trachea and main bronchi (air) -> lung
vessel trees -> spine (vertebral bodies with cortical shell, discs, posterior arch, canal) ->
sternum -> 12 rib pairs and clavicles (cortical shell + marrow, costal cartilage) -> scapulae ->
lung tumours (5-40 mm, labelled).

Per subject (from the seed): overall size, chest width/depth, fat thickness (smoothly varying),
sex (breasts), breathing state ``breath`` in [0, 1] (0 = expiration: higher diaphragm, denser lungs,
steeper ribs; 1 = deep inspiration), and 1-4 tumours, the first behind a rib in the AP view and the
second between ribs whenever the lungs allow it. HU values: :data:`HU`. Writing to disk and the figure:
:mod:`pipeline.data.phantoms.chest_dataset`. See docs/chest_phantoms.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pipeline.data.phantoms.anatomy import smooth_noise
from pipeline.data.phantoms.dataset import phantom_grid

#: Grid presets: shape (voxels) and isotropic spacing (mm); both cover 400 x 280 x 360 mm (R-L, A-P, S-I).
SIZES: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "default": ((160, 112, 144), (2.5, 2.5, 2.5)),
    "tiny": ((50, 35, 45), (8.0, 8.0, 8.0)),
}
FOV_MM = np.array([400.0, 280.0, 360.0])

#: Nominal CT numbers (HU). Cortical bone is the compact shell of ribs, clavicles, sternum, vertebrae;
#: marrow the trabecular interior; the scapula is a thin plate, so its voxels mix cortical bone with
#: marrow and muscle (partial volume at 2.5 mm).
HU: dict[str, float] = {
    "air": -1000.0, "fat": -100.0, "breast": -50.0, "muscle": 45.0, "blood": 40.0, "liver": 60.0,
    "lung": -850.0, "cartilage": 120.0, "cortical": 1300.0, "marrow": 230.0, "disc": 80.0,
    "scapula": 700.0, "canal": 15.0, "tumour": 35.0,
}
CT_NOISE_SD_HU = 10.0
N_RIBS = 12
SUBJECT_ID_PREFIX = "2TP"  # task 2 (SE -> DE X-ray), thorax, centre P (phantom)


@dataclass(frozen=True)
class Tumour:
    """One lung tumour: ``label`` in the label map, ``centre_mm`` world RAS, ``diameter_mm``,
    ``behind_rib_ap`` = its centre's AP ray crosses rib bone (>= 5 mm of rib along y)."""

    label: int
    centre_mm: tuple[float, float, float]
    diameter_mm: float
    behind_rib_ap: bool


@dataclass
class ChestSubject:
    """One phantom. Arrays ``(X, Y, Z)`` on the grid of ``affine`` (4x4 voxel -> world mm, RAS;
    stored LAS: voxel axis 0 runs to the patient's left, like many scanner exports)."""

    ct: np.ndarray  # int16, HU
    tumour_labels: np.ndarray  # uint8, 0 = background, k = tumour k
    affine: np.ndarray
    tumours: list[Tumour]
    params: dict = field(default_factory=dict)  # breath, scale, sex, ... (JSON-serialisable)


def subject_id(index: int) -> str:
    """ID of the ``index``-th subject (0-based): 0 -> ``2TP001``."""
    return f"{SUBJECT_ID_PREFIX}{index + 1:03d}"


def _ellipse_sdf(u: np.ndarray, v: np.ndarray, a, b) -> np.ndarray:
    """Approximate signed distance (mm) to the ellipse u^2/a^2 + v^2/b^2 = 1: (r - 1) / |grad r|."""
    p, q = u / a, v / b
    r = np.sqrt(p * p + q * q)
    grad = np.sqrt((p / a) ** 2 + (q / b) ** 2) / np.maximum(r, 1e-6)
    return (r - 1.0) / np.maximum(grad, 1e-6)


def _intersect(*sdfs: np.ndarray) -> np.ndarray:
    """Signed distance (approximate) of the intersection: the pointwise maximum, broadcasting."""
    out = sdfs[0]
    for other in sdfs[1:]:
        out = np.maximum(out, other)
    return out


def _ellipsoid_sdf(x, y, z, centre, semi) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid (open grids ok)."""
    u = [(q - c) / a for q, c, a in zip((x, y, z), centre, semi)]
    r = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    grad = np.sqrt(sum((ui / a) ** 2 for ui, a in zip(u, semi))) / np.maximum(r, 1e-6)
    return (r - 1.0) / np.maximum(grad, 1e-6)


def _capsule_sdf(x, y, z, p0, p1, radius: float) -> np.ndarray:
    """Signed distance (mm) to the capsule of ``radius`` around segment p0 -> p1 (open grids ok)."""
    p0, d = np.asarray(p0, float), np.asarray(p1, float) - np.asarray(p0, float)
    rel = (x - p0[0], y - p0[1], z - p0[2])
    t = np.clip((rel[0] * d[0] + rel[1] * d[1] + rel[2] * d[2]) / max(float(d @ d), 1e-9), 0.0, 1.0)
    return np.sqrt((rel[0] - t * d[0]) ** 2 + (rel[1] - t * d[1]) ** 2 + (rel[2] - t * d[2]) ** 2) - radius


class _Canvas:
    """HU volume plus the painting rule: occupancy = clip(0.5 - sdf / voxel, 0, 1), HU blended in."""

    def __init__(self, q: tuple[np.ndarray, ...], voxel_mm: float) -> None:
        self.q, self.voxel = q, voxel_mm
        self.hu = np.full(tuple(len(a.ravel()) for a in q), HU["air"], dtype=np.float32)

    def occupancy(self, sdf: np.ndarray) -> np.ndarray:
        return np.clip(0.5 - sdf / self.voxel, 0.0, 1.0).astype(np.float32)

    def paint(self, sdf: np.ndarray, value, where: np.ndarray | None = None) -> np.ndarray:
        """Blend ``value`` (HU, scalar or array) where ``sdf < 0``; ``where`` (0..1) limits it."""
        occ = np.broadcast_to(self.occupancy(sdf), self.hu.shape)
        if where is not None:
            occ = occ * where
        self.hu += (np.asarray(value, dtype=np.float32) - self.hu) * occ
        return occ

    def paint_capsule(self, p0, p1, radius: float, value: float, *, only_below_hu: float | None = None) -> None:
        """Capsule painted inside its bounding box only (cheap for the many small vessel segments)."""
        lo = np.minimum(p0, p1) - radius - self.voxel
        hi = np.maximum(p0, p1) + radius + self.voxel
        box = tuple(slice(int(np.searchsorted(a.ravel(), l)), int(np.searchsorted(a.ravel(), h)))
                    for a, l, h in zip(self.q, lo, hi))
        if any(s.stop <= s.start for s in box):
            return
        x = self.q[0].ravel()[box[0]][:, None, None]
        y = self.q[1].ravel()[box[1]][None, :, None]
        z = self.q[2].ravel()[box[2]][None, None, :]
        occ = self.occupancy(_capsule_sdf(x, y, z, p0, p1, radius))
        view = self.hu[box]
        if only_below_hu is not None:
            occ = occ * (view < only_below_hu)
        view += (value - view) * occ


def _vessel_tree(rng: np.random.Generator, canvas: _Canvas, hilum, side: float, s: float) -> None:
    """Pulmonary vessels: 4 trunks from the hilum, each branching 3 times (lengths x0.75, radii x0.7),
    painted only into lung (HU < -500) so they never cover bone or mediastinum."""
    stack = []
    for direction in ([side * 0.5, 0.1, 0.85], [side, 0.2, 0.1], [side * 0.6, -0.1, -0.8], [side * 0.3, -0.7, -0.6]):
        unit = np.asarray(direction) / np.linalg.norm(direction)
        stack.append((np.asarray(hilum, float), unit, 45.0 * s, 5.0 * s, 0))
    while stack:
        start, direction, length, radius, depth = stack.pop()
        end = start + direction * length
        canvas.paint_capsule(start, end, radius, HU["blood"], only_below_hu=-500.0)
        if depth < 3:
            for _ in range(2):
                child = direction + rng.normal(0.0, 0.45, 3)
                stack.append((end, child / np.linalg.norm(child), 0.75 * length, 0.7 * radius, depth + 1))


def make_chest_subject(*, seed: int, size: str | tuple[int, int, int] = "default") -> ChestSubject:
    """Generate one chest CT phantom with tumour labels, deterministic in ``seed``.

    ``size``: ``"default"`` (160 x 112 x 144 at 2.5 mm), ``"tiny"`` (50 x 35 x 45 at 8 mm, for tests),
    or a shape covering the same 400 x 280 x 360 mm field of view.
    """
    rng = np.random.default_rng(seed)
    shape, spacing = phantom_grid(size, sizes=SIZES, fov_mm=FOV_MM, min_voxels=16, what="chest phantom")
    axes = [((np.arange(n) - (n - 1) / 2.0) * sp).astype(np.float32) for n, sp in zip(shape, spacing)]
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    canvas = _Canvas((x, y, z), float(spacing.min()))

    s = float(rng.uniform(0.88, 1.06))  # overall size
    breath = float(rng.uniform(0.0, 1.0))
    female = bool(rng.random() < 0.5)
    a_max = 135.0 * s * rng.uniform(0.94, 1.06)  # rib cage half-width (mm)
    b_max = 92.0 * s * rng.uniform(0.9, 1.08) * (1.0 + 0.05 * breath)  # rib cage half-depth
    fat_mm = float(rng.uniform(6.0, 30.0))
    muscle_mm = 14.0 * s
    z_rib1 = 122.0 * s  # posterior end of rib 1
    pitch = 21.5 * s * (1.0 + 0.05 * breath)
    z_apex = z_rib1 + 18.0 * s
    dome = {1.0: -30.0 * s - 35.0 * s * breath + 12.0 * s, -1.0: -30.0 * s - 35.0 * s * breath}  # +1 right

    # Rib cage cross-section (ellipse) tapering to the lung apices: half-axes as functions of z.
    taper = np.sqrt(np.clip(1.0 - ((z - (z_apex - 105.0 * s)) / (120.0 * s)).clip(0, None) ** 2, 0.04, 1.0))
    a_z, b_z = a_max * taper, b_max * (0.55 + 0.45 * taper)
    cage = _ellipse_sdf(x, y, a_z, b_z)  # mm, < 0 inside the rib cage's outer surface

    # Body (fat), breasts, chest-wall muscle.
    wobble = smooth_noise(rng, shape, spacing, 80.0)
    body = _ellipse_sdf(x, y, a_max + muscle_mm + fat_mm, b_max + muscle_mm + 0.7 * fat_mm) - 5.0 * wobble
    canvas.paint(body, HU["fat"])
    if female:
        for side in (1.0, -1.0):
            centre = (side * 80.0 * s, b_max + muscle_mm + 0.5 * fat_mm, z_rib1 - 125.0 * s)
            canvas.paint(_ellipsoid_sdf(x, y, z, centre, np.array([62.0, 48.0, 55.0]) * s), HU["breast"])
    canvas.paint(cage - muscle_mm * (1.0 + 0.25 * wobble), HU["muscle"])

    # Thoracic cavity, lungs, abdomen below the diaphragm.
    rib_w, rib_h = 3.5 * s, 6.0 * s
    inner = cage + 2.0 * rib_w + 1.0
    canvas.paint(inner, HU["blood"])
    side_of = np.sign(x + 1e-3)
    dome_z = np.where(side_of > 0, dome[1.0], dome[-1.0])
    z_dia = (dome_z - 45.0 * s * ((np.abs(x) - 55.0 * s) / a_max).clip(0, None) ** 2 * 3.0
             - 28.0 * s * (-y / b_max).clip(0, None) ** 1.5)
    mediastinum_half = 22.0 * s + 14.0 * s * (y / b_max).clip(0, None)
    lung_sdf = _intersect(inner, z_dia - z, mediastinum_half - np.abs(x), z - z_apex)
    gravity = (-y / b_max).clip(-1, 1)
    lung_hu = HU["lung"] + 45.0 * (1.0 - breath) + 35.0 * gravity + 18.0 * smooth_noise(rng, shape, spacing, 12.0)
    lung_occ = canvas.paint(lung_sdf, lung_hu)
    below = np.maximum(inner, z - z_dia)
    canvas.paint(below, HU["blood"])
    canvas.paint(np.maximum(below, -20.0 * s - x), HU["liver"])  # liver: right of ~2 cm left of midline
    bubble = (-60.0 * s, 5.0 * s, dome[-1.0] - 22.0 * s)
    canvas.paint(_ellipsoid_sdf(x, y, z, bubble, np.array([32.0, 32.0, 16.0]) * s), HU["air"])

    # Heart and great vessels, airways.
    heart_c = (-22.0 * s, 18.0 * s, dome[-1.0] + 50.0 * s)
    canvas.paint(_ellipsoid_sdf(x, y, z, heart_c, np.array([64.0, 50.0, 58.0]) * s), HU["blood"])
    y_spine = -0.62 * b_max
    arch_z = z_rib1 - 55.0 * s
    for p0, p1, r in (((10 * s, 15 * s, heart_c[2] + 30 * s), (10 * s, 15 * s, arch_z), 14 * s),
                      ((10 * s, 15 * s, arch_z), (-24 * s, y_spine + 26 * s, arch_z), 13 * s),
                      ((-24 * s, y_spine + 26 * s, arch_z), (-24 * s, y_spine + 26 * s, -200.0), 12 * s),
                      ((30 * s, 12 * s, arch_z + 45 * s), (30 * s, 12 * s, heart_c[2] + 20 * s), 11 * s)):
        canvas.paint(_capsule_sdf(x, y, z, p0, p1, r), HU["blood"])
    carina = (0.0, y_spine + 42.0 * s, arch_z - 18.0 * s)
    canvas.paint(_capsule_sdf(x, y, z, (0.0, carina[1], 250.0), carina, 9.0 * s), HU["air"])
    hila = {}
    for side in (1.0, -1.0):
        hila[side] = (side * 50.0 * s, carina[1] - 8.0 * s, carina[2] - 30.0 * s)
        canvas.paint(_capsule_sdf(x, y, z, carina, hila[side], 6.0 * s), HU["air"])
    for side in (1.0, -1.0):
        _vessel_tree(rng, canvas, hila[side], side, s)

    # Spine: vertebral bodies (cortical shell, marrow, discs), posterior arch, canal.
    period, disc = 24.0 * s, 5.0 * s
    disc_w = (np.mod(z - z_rib1, period) < disc).astype(np.float32)
    vb = _ellipse_sdf(x, y - y_spine, 21.0 * s, 16.0 * s)
    canal_c = y_spine - 16.0 * s - 10.0 * s
    canvas.paint(np.minimum(_ellipse_sdf(x, y - canal_c, 16.0 * s, 14.0 * s),
                            _capsule_sdf(x, y, 0.0, (0, canal_c, 0), (0, canal_c - 38.0 * s, 0), 5.0 * s)),
                 HU["scapula"])  # arch + spinous process: thin cortical plates mixed with marrow
    canvas.paint(_ellipse_sdf(x, y - canal_c, 8.0 * s, 8.0 * s), HU["canal"])
    canvas.paint(vb, HU["cortical"])
    canvas.paint(vb + 2.0, HU["marrow"] + (HU["disc"] - HU["marrow"]) * disc_w)
    canvas.paint(vb, HU["disc"], where=disc_w)

    # Sternum (manubrium wider), ribs with costal cartilage, clavicles: cortical shell + marrow.
    z_top, z_bottom = z_rib1 - 5.0 * s, z_rib1 - 175.0 * s
    half_width = np.where(z > z_rib1 - 55.0 * s, 24.0 * s, 14.0 * s)
    sternum = _intersect(np.abs(x) - half_width, np.abs(y - (b_z - 8.0 * s)) - 6.0 * s,
                                 z - z_top, z_bottom - z)
    canvas.paint(sternum, HU["cortical"])
    canvas.paint(sternum + 1.5, HU["marrow"])
    phi = np.abs(np.arctan2(x, -(y - 0.0)))  # 0 at the spine, pi at the sternum
    drop = 60.0 * s * (1.0 - 0.3 * breath) * (phi / np.pi) ** 1.4
    k = np.clip(np.rint((z_rib1 - drop - z) / pitch), 0, N_RIBS - 1)
    dz = z - (z_rib1 - drop - k * pitch)
    section = np.sqrt(((cage + rib_w) / rib_w) ** 2 + (dz / rib_h) ** 2)
    rib_end = np.interp(k, [0, 6, 7, 9, 10, 11], [2.6, 2.55, 2.35, 2.1, 1.5, 1.1])
    radius = 0.5 * (a_z + b_z)
    along = np.maximum((0.22 - phi) * radius, (phi - rib_end) * radius)
    cartilage = np.maximum((section - 1.0) * rib_w, np.maximum((rib_end - phi) * radius, (phi - 2.95) * radius))
    canvas.paint(np.where(k < 10, cartilage, 1e3), HU["cartilage"])
    rib = np.maximum((section - 1.0) * rib_w, along)
    rib_occ = canvas.paint(rib, HU["cortical"]).copy()
    canvas.paint(np.maximum((section - 1.0) * rib_w + 1.5, along), HU["marrow"])
    for side in (1.0, -1.0):
        pts = [(side * 18 * s, 0.85 * b_max, z_rib1 + 4 * s), (side * 70 * s, 0.9 * b_max, z_rib1 + 14 * s),
               (side * 125 * s, 0.35 * b_max, z_rib1 + 22 * s), (side * 150 * s, -0.1 * b_max, z_rib1 + 26 * s)]
        for p0, p1 in zip(pts[:-1], pts[1:]):
            canvas.paint(_capsule_sdf(x, y, z, p0, p1, 7.0 * s), HU["cortical"])
            canvas.paint(_capsule_sdf(x, y, z, p0, p1, 4.5 * s), HU["marrow"])

    # Scapulae: thin plates on the posterolateral chest wall, triangular (lateral border slants in).
    t = (z_rib1 + 10.0 * s - z) / (150.0 * s)
    phi_lateral = 1.55 - 0.8 * t
    plate = _intersect(np.abs(cage - muscle_mm * 0.6) - 3.0 * s, (phi - phi_lateral) * radius,
                               (0.5 - phi) * radius, (-t) * 150.0 * s, (t - 1.0) * 150.0 * s,
                               y - 0.1 * b_max)
    canvas.paint(plate, HU["scapula"])

    tumours, labels = _place_tumours(rng, canvas, lung_occ, rib_occ, spacing)
    hu = ndimage.gaussian_filter(canvas.hu, 0.5)  # scanner PSF
    inside = canvas.occupancy(body) > 0
    hu += rng.standard_normal(hu.shape).astype(np.float32) * CT_NOISE_SD_HU * inside
    hu = np.where(inside, hu, HU["air"])

    # Storage LAS (voxel axis 0 -> patient's left) with the FOV centre at a subject-specific couch position.
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    offset = np.array([0.0, rng.uniform(-30, 30), rng.uniform(-400, -300)])
    affine[:3, 3] = offset - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    tumours = [Tumour(t.label, tuple(float(c) for c in np.asarray(t.centre_mm) + offset), t.diameter_mm,
                      t.behind_rib_ap) for t in tumours]
    params = {"seed": int(seed), "scale": s, "breath": breath, "female": female, "fat_mm": fat_mm,
              "rib_cage_half_width_mm": float(a_max), "rib_cage_half_depth_mm": float(b_max)}
    return ChestSubject(ct=np.clip(np.rint(hu[::-1]), -1024, 3071).astype(np.int16),
                        tumour_labels=np.ascontiguousarray(labels[::-1]), affine=affine, tumours=tumours, params=params)


def _place_tumours(rng: np.random.Generator, canvas: _Canvas, lung_occ: np.ndarray, rib_occ: np.ndarray,
                   spacing: np.ndarray) -> tuple[list[Tumour], np.ndarray]:
    """1-4 tumours (diameters log-uniform 5-40 mm) fully inside a lung, 5 mm apart; tumour 1 behind a
    rib in the AP direction, tumour 2 between ribs, when possible. Returns frame-mm tumours + labels."""
    x, y, z = (a.ravel() for a in canvas.q)
    # Lung as finally painted: the heart, vessels and airways painted after the lungs are excluded.
    lung = (lung_occ > 0.5) & (canvas.hu < -500.0)
    depth = ndimage.distance_transform_edt(lung, sampling=spacing)  # mm to the lung's edge
    rib_ap_mm = rib_occ.sum(axis=1) * spacing[1]  # (X, Z): rib bone along each AP line
    labels = np.zeros(canvas.hu.shape, dtype=np.uint8)
    tumours: list[Tumour] = []
    n = int(rng.integers(1, 5))
    for index in range(n):
        diameter = float(np.exp(rng.uniform(np.log(5.0), np.log(40.0))))
        candidates = np.argwhere(depth >= diameter / 2 + 3.0)
        if len(candidates):
            behind = rib_ap_mm[candidates[:, 0], candidates[:, 2]] >= 5.0
            want = {0: behind, 1: ~behind}.get(index)
            if want is not None and want.any():
                candidates = candidates[want]
        rng.shuffle(candidates)
        for i, j, kk in candidates[:200]:
            centre = np.array([x[i], y[j], z[kk]], float)
            gaps = [np.linalg.norm(centre - np.asarray(t.centre_mm)) - (diameter + t.diameter_mm) / 2 for t in tumours]
            if all(gap > 5.0 for gap in gaps):
                break
        else:
            continue
        semi = diameter / 2 * rng.uniform(0.85, 1.15, 3)
        r = np.sqrt(((x[:, None, None] - centre[0]) / semi[0]) ** 2 + ((y[None, :, None] - centre[1]) / semi[1]) ** 2
                    + ((z[None, None, :] - centre[2]) / semi[2]) ** 2)
        occ = canvas.paint((r - 1.0) * semi.min(), HU["tumour"])
        mask = occ >= 0.5
        mask[i, j, kk] = True  # a 5 mm tumour on an 8 mm grid still gets its voxel
        labels[mask] = len(tumours) + 1
        tumours.append(Tumour(len(tumours) + 1, tuple(centre), diameter, bool(rib_ap_mm[i, kk] >= 5.0)))
    return tumours, labels

