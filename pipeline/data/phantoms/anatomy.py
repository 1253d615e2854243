"""Head anatomy for the paired MR/CT phantoms: tissue table and per-voxel tissue fractions.

The head is built in an anatomical *frame* (mm; +x = right, +y = anterior, +z = superior, origin at
the centre of the head ellipsoid). Each structure is an approximate signed distance (mm, negative
inside) that is painted, in anatomical order, onto a stack of tissue fractions with a linear ramp one
voxel wide: that ramp is the partial-volume effect, so thin layers (1-2 mm cortical tables) survive
as mixed voxels instead of aliasing in or out. Later structures replace earlier ones.

:data:`TISSUES` is the documented property table (HU for CT, proton density / T1 / T2* for the
T1-weighted MR); other modules and the docs may cite it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    """Tissue labels (values of the optional label map)."""

    AIR = 0  # outside the head
    SOFT_TISSUE = 1  # skin / scalp / face and neck muscle
    FAT = 2  # subcutaneous and orbital fat
    CORTICAL_BONE = 3  # outer and inner tables, skull base, sinus walls, petrous ridges
    DIPLOE = 4  # trabecular bone with fatty marrow between the tables
    CSF = 5  # subarachnoid space, sulci, falx gap, ventricles
    GREY_MATTER = 6  # cortex and deep grey nuclei
    WHITE_MATTER = 7
    VITREOUS = 8  # eye globes
    SINUS_AIR = 9  # air inside the head: nasal cavity and paranasal sinuses


@dataclass(frozen=True)
class TissueProperties:
    """CT and MR properties of one tissue.

    ``hu`` is the nominal CT number (HU); ``hu_range`` is the range the generator draws from where the
    value varies in space (bone density). ``proton_density`` is relative to water (1.0); ``t1_ms`` and
    ``t2star_ms`` are 1.5 T-like relaxation times (ms) fed to the spoiled gradient-echo signal equation.
    """

    hu: float
    hu_range: tuple[float, float]
    proton_density: float
    t1_ms: float
    t2star_ms: float


#: Per-tissue properties (CT: HU; MR: relative PD, T1 and T2* in ms). Cortical bone and air have (almost)
#: no MR-visible protons, so both are dark in MR: the ambiguity MR -> CT must resolve from context.
TISSUES: dict[Tissue, TissueProperties] = {
    Tissue.AIR: TissueProperties(-1000.0, (-1000.0, -1000.0), 0.0, 1.0, 1.0),
    Tissue.SOFT_TISSUE: TissueProperties(45.0, (45.0, 45.0), 0.70, 1000.0, 30.0),
    Tissue.FAT: TissueProperties(-100.0, (-100.0, -100.0), 0.90, 260.0, 35.0),
    Tissue.CORTICAL_BONE: TissueProperties(1450.0, (1000.0, 1800.0), 0.05, 250.0, 0.4),
    Tissue.DIPLOE: TissueProperties(500.0, (300.0, 700.0), 0.45, 450.0, 6.0),
    Tissue.CSF: TissueProperties(10.0, (10.0, 10.0), 1.00, 4000.0, 200.0),
    Tissue.GREY_MATTER: TissueProperties(40.0, (36.0, 44.0), 0.82, 1300.0, 50.0),
    Tissue.WHITE_MATTER: TissueProperties(25.0, (21.0, 29.0), 0.70, 800.0, 45.0),
    Tissue.VITREOUS: TissueProperties(10.0, (10.0, 10.0), 1.00, 3800.0, 150.0),
    Tissue.SINUS_AIR: TissueProperties(-1000.0, (-1000.0, -1000.0), 0.0, 1.0, 1.0),
}
N_TISSUES = len(Tissue)


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: np.ndarray, scale_mm: float
) -> np.ndarray:
    """Smooth random field on a voxel grid, zero mean and unit SD, correlation length ~``scale_mm``.

    White noise on a coarse control grid is blended with separable Gaussian weights. Separable
    matrix products cost O(N x controls-per-axis), much cheaper than full-grid filtering or spline
    zooming of every field we need (deformation, thicknesses, densities, bias, texture).
    """
    weights = []
    for n, sp in zip(shape, spacing):
        extent = n * sp
        n_ctrl = max(2, int(np.ceil(extent / (0.75 * scale_mm))) + 3)
        ctrl = np.linspace(-1.5 * scale_mm, extent + 1.5 * scale_mm, n_ctrl)
        pos = (np.arange(n) + 0.5) * sp
        w = np.exp(-0.5 * ((pos[:, None] - ctrl[None, :]) / scale_mm) ** 2)
        weights.append((w / w.sum(axis=1, keepdims=True)).astype(np.float32))
    coarse = rng.standard_normal([w.shape[1] for w in weights]).astype(np.float32)
    field = np.einsum("ia,abc->ibc", weights[0], coarse)
    field = np.einsum("jb,ibc->ijc", weights[1], field)
    field = np.einsum("kc,ijc->ijk", weights[2], field)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def ellipsoid_sdf(q: tuple[np.ndarray, ...], centre, semi) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid: (r - 1) / |grad r|."""
    u = [(qi - c) / a for qi, c, a in zip(q, centre, semi)]
    r = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    grad = np.sqrt(sum((ui / a) ** 2 for ui, a in zip(u, semi))) / np.maximum(r, 1e-6)
    return (r - 1.0) / np.maximum(grad, 1e-6)


class TissueCanvas:
    """Stack of tissue fractions ``(n_channels, X, Y, Z)`` float32 (channel = tissue label), initially all air.

    ``n_channels`` defaults to :data:`N_TISSUES`; a richer head (``pipeline.data.phantoms.head_tissues``) adds
    channels after these and paints them with the same rules.
    """

    def __init__(self, shape: tuple[int, int, int], ramp_mm: float, n_channels: int = N_TISSUES) -> None:
        self.fractions = np.zeros((n_channels, *shape), dtype=np.float32)
        self.fractions[Tissue.AIR] = 1.0
        self.ramp_mm = ramp_mm

    def occupancy(self, sdf: np.ndarray) -> np.ndarray:
        """Fraction of each voxel inside ``sdf < 0`` (mm): the one-voxel linear partial-volume ramp."""
        return np.clip(0.5 - sdf / self.ramp_mm, 0.0, 1.0).astype(np.float32)

    def paint(self, tissue: int, sdf: np.ndarray, box: tuple[slice, ...] | None = None) -> None:
        """Replace the content where ``sdf < 0`` by ``tissue``, with a one-voxel partial-volume ramp.

        ``box``: ``sdf`` covers only this sub-box of the grid (slices), nothing outside it is touched.
        """
        occ = self.occupancy(sdf)
        hit = occ > 0
        if not hit.any():
            return
        # Restrict the K-channel update to the structure's bounding box (most structures are small).
        inner = tuple(
            slice(int(idx[0]), int(idx[-1]) + 1)
            for idx in (np.flatnonzero(hit.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3))
        )
        o = occ[inner]
        if box is not None:
            inner = tuple(slice(b.start + i.start, b.start + i.stop) for b, i in zip(box, inner))
        view = self.fractions[(slice(None), *inner)]
        view *= 1.0 - o
        view[tissue] += o

    def convert(self, source: int, target: int, sdf: np.ndarray, box: tuple[slice, ...]) -> None:
        """Turn the ``source`` part of each voxel of ``box`` where ``sdf < 0`` into ``target`` (same ramp);
        the other tissues of a mixed voxel stay (e.g. air lined with mucosa, the bony wall untouched)."""
        moved = self.fractions[(source, *box)] * self.occupancy(sdf)
        self.fractions[(source, *box)] -= moved
        self.fractions[(target, *box)] += moved


def frame_box(q: tuple[np.ndarray, np.ndarray, np.ndarray], lo, hi) -> tuple[slice, slice, slice] | None:
    """Smallest box of the voxel grid holding every voxel whose frame coordinates ``q`` (mm) lie in
    ``[lo, hi]`` per axis, or None if none does. Structures are painted on ``q[box]`` only: a few
    thousand voxels instead of the whole head."""
    inside = (q[0] >= lo[0]) & (q[0] <= hi[0])
    for qi, low, high in zip(q[1:], lo[1:], hi[1:]):
        inside &= (qi >= low) & (qi <= high)
    box = []
    for ax in range(3):
        idx = np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != ax)))
        if idx.size == 0:
            return None
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


@dataclass
class HeadLayout:
    """What :func:`paint_head` built, for structures painted on top of it (frame mm; arrays ``(X, Y, Z)``).

    ``depth`` is the depth below the skin; ``d_fat``, ``d_outer`` and ``d_cranial`` the depths where fat,
    the outer table and the cranial cavity begin. ``z_base`` is the skull-base surface (its plate is
    ``t_base`` mm thick, ``base_norm`` turns a height difference into a distance), sloping from
    ``z_base_post`` (posterior fossa, ``qy < y_post``) to ``z_base_ant`` (anterior fossa, ``qy > y_ant``).
    """

    canvas: TissueCanvas
    q: tuple[np.ndarray, np.ndarray, np.ndarray]
    spacing: np.ndarray
    head_semi: tuple[float, float, float, float]
    depth: np.ndarray
    d_fat: np.ndarray
    d_outer: np.ndarray
    d_cranial: np.ndarray
    z_base: np.ndarray
    base_norm: np.ndarray
    t_base: float
    z_base_ant: float
    z_base_post: float
    y_ant: float
    y_post: float
    z_eye: float
    x_eye: float
    r_eye: float
    nasal_centre: tuple[float, float, float]
    nasal_semi: tuple[float, float, float]
    z_maxillary: float


def _head_sdf_depth(q, semi, spacing):
    """Depth below the skin (mm, > 0 inside the head) of the deformed head ellipsoid.

    The lower half of the ellipsoid is elongated (face and neck continue below the FOV).
    First-order distance estimate (1 - r) / |grad r| with the gradient taken on the voxel grid, so
    the random deformation is accounted for and the depth is in true mm.
    """
    az = np.where(q[2] > 0, semi[2], semi[3])
    r = np.sqrt((q[0] / semi[0]) ** 2 + (q[1] / semi[1]) ** 2 + (q[2] / az) ** 2)
    grads = np.gradient(r, *spacing)
    grad_norm = np.sqrt(sum(g * g for g in grads))
    return ((1.0 - r) / np.maximum(grad_norm, 1e-4)).astype(np.float32)


def front_y(semi, x: float, z: float) -> float:
    """Anterior skin position (frame y, mm) of the undeformed head at (x, z)."""
    az = semi[2] if z > 0 else semi[3]
    return float(semi[1] * np.sqrt(max(1.0 - (x / semi[0]) ** 2 - (z / az) ** 2, 0.05)))


def paint_head(
    rng: np.random.Generator,
    q: tuple[np.ndarray, np.ndarray, np.ndarray],
    spacing: np.ndarray,
    head_semi: tuple[float, float, float, float],
    *,
    n_channels: int = N_TISSUES,
    return_layout: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]] | tuple[np.ndarray, dict[str, np.ndarray], HeadLayout]:
    """Tissue fractions of one head.

    Args:
        rng: the subject's random generator (consumed in a fixed order: deterministic).
        q: frame coordinates (mm) of every voxel, three ``(X, Y, Z)`` arrays (already rotated,
            scaled and deformed).
        spacing: voxel size (mm) of the grid, used for the depth gradient and the ramp width.
        head_semi: head ellipsoid semi-axes (mm): left-right, antero-posterior, upper and lower
            supero-inferior.
        n_channels: channels of the fraction stack (>= ``N_TISSUES``; extra channels stay 0 here).
        return_layout: also return the :class:`HeadLayout` (canvas, layer depths, landmarks), so that a
            richer head can paint more structures on top; the fractions are the same either way.

    Returns:
        ``(fractions, fields)``: fractions ``(n_channels, X, Y, Z)`` float32 summing to 1, and smooth
        unit-SD fields (``"cortical"``, ``"diploe"``, ``"texture"``) that modulate bone density and
        brain texture consistently in CT and MR; ``(fractions, fields, layout)`` with ``return_layout``.
    """
    shape = q[0].shape
    qx, qy, qz = q
    canvas = TissueCanvas(shape, ramp_mm=float(np.mean(spacing)), n_channels=n_channels)
    noise = lambda scale: smooth_noise(rng, shape, spacing, scale)  # noqa: E731

    depth = _head_sdf_depth(q, head_semi, spacing)
    # Layer thicknesses (mm) vary smoothly over the head.
    t_skin = np.clip(3.0 + 0.4 * noise(40.0), 2.0, 4.0)
    t_fat = np.clip(3.5 + 1.0 * noise(35.0) - 1.0 * np.tanh(qy / 40.0), 1.5, 6.0)  # thicker occiput
    t_outer = np.clip(2.0 + 0.4 * noise(30.0), 1.2, 3.0)
    temporal = np.exp(-(((qz + 5.0) / 25.0) ** 2)) * (qx / head_semi[0]) ** 2  # thin temporal squama
    t_diploe = np.clip(3.5 + 1.6 * noise(30.0) - 1.5 * temporal, 0.5, 7.0)
    t_inner = np.clip(1.6 + 0.3 * noise(30.0), 1.0, 2.5)
    t_csf = np.clip(2.2 + 0.6 * noise(30.0) + rng.uniform(-0.5, 1.0), 1.0, 4.5)
    gyri = noise(7.0)
    t_gm = np.clip(3.0 + 1.8 * gyri, 1.0, 7.0)
    d_fat = t_skin
    d_outer = d_fat + t_fat
    d_diploe = d_outer + t_outer
    d_inner = d_diploe + t_diploe
    d_cranial = d_inner + t_inner
    d_brain = d_cranial + t_csf

    # Landmarks (frame mm), jittered per subject.
    z_eye = -25.0 + rng.uniform(-4.0, 4.0)
    r_eye = rng.uniform(11.5, 12.5)
    x_eye = rng.uniform(29.0, 33.0)
    r_orbit = r_eye + 7.0
    z_base_ant = z_eye + r_orbit + 3.0  # anterior cranial fossa floor = orbit roof
    z_base_post = z_eye - 45.0 + rng.uniform(-5.0, 5.0)  # posterior fossa floor
    y_ant, y_post = 25.0, -35.0
    slope = (z_base_ant - z_base_post) / (y_ant - y_post)
    z_base = np.clip(z_base_post + slope * (qy - y_post), z_base_post, z_base_ant)
    on_slope = (qy > y_post) & (qy < y_ant)
    base_norm = np.where(on_slope, np.sqrt(1.0 + slope**2), 1.0).astype(np.float32)
    t_base = 5.0

    paint = canvas.paint
    paint(Tissue.SOFT_TISSUE, -depth)
    paint(Tissue.FAT, d_fat - depth)
    paint(Tissue.CORTICAL_BONE, d_outer - depth)
    paint(Tissue.DIPLOE, d_diploe - depth)
    paint(Tissue.CORTICAL_BONE, d_inner - depth)
    paint(Tissue.CSF, np.maximum(d_cranial - depth, (z_base + t_base - qz) / base_norm))
    # Below the skull base (face, neck): soft tissue; the base itself is a cortical/diploe/cortical plate.
    paint(Tissue.SOFT_TISSUE, np.maximum(d_cranial - depth, (qz - z_base) / base_norm))
    plate = np.abs(qz - z_base - t_base / 2) / base_norm
    paint(Tissue.CORTICAL_BONE, np.maximum(d_cranial - depth, plate - t_base / 2))
    paint(Tissue.DIPLOE, np.maximum(d_cranial - depth, plate - (t_base / 2 - 1.5)))

    # Brain: cortex (with gyral folding of the grey/white boundary), sulci, white matter.
    above_base = lambda extra: (z_base + t_base + extra - qz) / base_norm  # noqa: E731
    t_csf_base = 2.0
    paint(Tissue.GREY_MATTER, np.maximum(d_brain - depth, above_base(t_csf_base)))
    sulci = noise(6.0)
    brain_depth = depth - d_brain
    in_sulcus = 3.0 * (1.0 - sulci)  # CSF-filled sulci where the noise is high, within 6 mm of the surface
    paint(Tissue.CSF, np.maximum.reduce([brain_depth - 6.0, -brain_depth, in_sulcus, above_base(t_csf_base)]))
    paint(Tissue.WHITE_MATTER, np.maximum(t_gm - brain_depth, above_base(t_csf_base) + t_gm))

    # Deep grey nuclei, lateral ventricles (curved, size varies with "age"), interhemispheric fissure.
    z_v = 15.0 + rng.uniform(-4.0, 4.0)
    v_scale = rng.uniform(0.9, 1.5)
    for side in (-1.0, 1.0):
        paint(Tissue.GREY_MATTER, ellipsoid_sdf(q, (side * 11.0, -8.0, z_v - 10.0), (8.0, 13.0, 9.0)))
        paint(Tissue.GREY_MATTER, ellipsoid_sdf(q, (side * 20.0, 8.0, z_v - 4.0), (6.0, 13.0, 10.0)))
    for side in (-1.0, 1.0):
        bend = (qx, qy, qz + 0.006 * qy**2)  # frontal and occipital horns curve downwards
        semi = (6.0 * v_scale, 32.0, 8.0 * v_scale)
        paint(Tissue.CSF, ellipsoid_sdf(bend, (side * (2.0 + semi[0]), -2.0, z_v), semi))
    paint(Tissue.CSF, np.maximum.reduce([np.abs(qx) - 1.0, z_v + 12.0 - qz, d_brain - depth]))

    # Petrous ridges: thick, dense bone at the skull base (oblique, pointing antero-medially).
    for side in (-1.0, 1.0):
        cy = -8.0
        cz = z_base_post + slope * (cy - y_post) + 2.0
        ang = np.deg2rad(40.0) * side
        u = np.cos(ang) * (qx - side * 30.0) + np.sin(ang) * (qy - cy)
        v = -np.sin(ang) * (qx - side * 30.0) + np.cos(ang) * (qy - cy)
        paint(Tissue.CORTICAL_BONE, ellipsoid_sdf((u, v, qz), (0.0, 0.0, cz), (6.0, 20.0, 6.0)))

    # Orbits: bony cup, orbital fat, globe. The skin/eyelid in front is kept.
    for side in (-1.0, 1.0):
        y_eye = front_y(head_semi, x_eye, z_eye) - (r_eye + 5.0)
        centre = (side * x_eye, y_eye - 6.0, z_eye)
        behind = qy - y_eye - 2.0
        cup = ellipsoid_sdf(q, centre, (r_orbit + 2.0,) * 3)
        paint(Tissue.CORTICAL_BONE, np.maximum.reduce([cup, behind, d_fat - depth]))
        paint(Tissue.FAT, np.maximum(ellipsoid_sdf(q, centre, (r_orbit,) * 3), d_fat - depth))
        paint(Tissue.VITREOUS, ellipsoid_sdf(q, (side * x_eye, y_eye, z_eye), (r_eye,) * 3))

    # Air cavities, each enclosed by a cortical wall: nasal cavity (with septum), maxillary,
    # frontal and sphenoid sinuses. Sizes vary per subject (frontal sinus most).
    def cavity(centre, semi, wall_mm):
        sdf = ellipsoid_sdf(q, centre, semi)
        paint(Tissue.CORTICAL_BONE, sdf - wall_mm)
        paint(Tissue.SINUS_AIR, sdf)

    s = rng.uniform(0.85, 1.15, size=4)
    z_nasal = z_eye - 28.0
    nasal_semi = (9.0, 24.0 * s[0], 26.0)
    nasal_centre = (0.0, front_y(head_semi, 0.0, z_nasal) - nasal_semi[1] - d_fat.mean() - 2.0, z_nasal)
    cavity(nasal_centre, nasal_semi, 2.0)
    paint(Tissue.CORTICAL_BONE, np.maximum(np.abs(qx) - 1.0, ellipsoid_sdf(q, nasal_centre, nasal_semi)))
    z_max = z_eye - 32.0
    for side in (-1.0, 1.0):
        semi = (12.0 * s[1], 16.0 * s[1], 14.0 * s[1])
        cavity((side * 25.0, front_y(head_semi, 25.0, z_max) - 22.0 - semi[1], z_max), semi, 2.5)
    z_front = z_eye + 30.0
    front_semi = (14.0 * s[2], 6.0, 10.0 * s[2])
    cavity((0.0, front_y(head_semi, 0.0, z_front) - 17.0, z_front), front_semi, 1.5)
    cavity((0.0, nasal_centre[1] - nasal_semi[1] - 10.0, z_eye - 8.0), (10.0 * s[3], 10.0 * s[3], 9.0 * s[3]), 2.0)

    fields = {"cortical": noise(30.0), "diploe": noise(25.0), "texture": noise(6.0)}
    if not return_layout:
        return canvas.fractions, fields
    layout = HeadLayout(
        canvas=canvas, q=q, spacing=np.asarray(spacing, dtype=float), head_semi=tuple(head_semi), depth=depth,
        d_fat=d_fat, d_outer=d_outer, d_cranial=d_cranial, z_base=z_base, base_norm=base_norm, t_base=t_base,
        z_base_ant=z_base_ant, z_base_post=z_base_post, y_ant=y_ant, y_post=y_post, z_eye=z_eye, x_eye=x_eye,
        r_eye=r_eye, nasal_centre=nasal_centre, nasal_semi=nasal_semi, z_maxillary=z_max,
    )
    return canvas.fractions, fields, layout
