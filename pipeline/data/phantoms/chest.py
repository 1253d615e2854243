"""Chest CT phantoms with lung tumours: the embedded default data of the SE -> DE chest X-ray task.

``make_chest_subject(seed=..., size=...)`` paints one thorax in an anatomical frame (mm; RAS: +x = the
patient's right, +y anterior, +z superior, origin at the centre of the field of view) with the
painting rule of :mod:`pipeline.data.phantoms.shapes`, structure after structure:

body (fat; flat back, shoulders narrowing to the neck) -> arms (down the side or raised) -> breasts
(some subjects) -> chest-wall and back muscle -> the table under the patient (most subjects) ->
thoracic cavity (mediastinal fat) -> lungs (density gradient, texture) -> abdomen under the diaphragm
(:mod:`pipeline.data.phantoms.chest_organs`: liver, spleen, stomach and gas bubble, kidneys, bowel gas)
-> heart, great vessels, airways and lung vessel trees, with or without iodine contrast -> skeleton
(:mod:`pipeline.data.phantoms.chest_skeleton`: costal cartilage, ribs, sternum, spine, scapulae,
clavicles, humeri) -> lung tumours (5-40 mm, solid or subsolid, labelled) -> in some subjects the scan
range ends in the upper chest (air above, as in the real chest CT) -> scanner blur and noise.

Per subject (from the seed): overall size, chest width and depth, fat, sex (breasts), breathing state
``breath`` in [0, 1] (0 = expiration: higher diaphragm, denser lungs, steeper ribs; 1 = deep
inspiration), arm posture, kyphosis and scoliosis, bone density, contrast phase and bolus, table,
scan range, vertical position, and 1-4 tumours: the first behind a rib in the AP view, the second
clear of ribs, heart and diaphragm, the third behind the heart or the diaphragm, whenever the lungs
allow. HU values: :data:`HU`. Writing to disk and the figure: :mod:`pipeline.data.phantoms.chest_dataset`.
See docs/chest_phantoms.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pipeline.data.phantoms.anatomy import smooth_noise
from pipeline.data.phantoms.chest_organs import draw_contrast, paint_abdomen, paint_heart_and_vessels
from pipeline.data.phantoms.chest_skeleton import make_thorax, paint_skeleton
from pipeline.data.phantoms.dataset import phantom_grid
from pipeline.data.phantoms.shapes import Canvas, ellipse_sdf, ellipsoid_sdf, intersect

#: Grid presets: shape (voxels) and isotropic spacing (mm); both cover 400 x 320 x 360 mm (R-L, A-P, S-I).
SIZES: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "default": ((160, 128, 144), (2.5, 2.5, 2.5)),
    "tiny": ((50, 40, 45), (8.0, 8.0, 8.0)),
}
FOV_MM = np.array([400.0, 320.0, 360.0])

#: Nominal CT numbers (HU). Cortical bone is the compact shell of ribs, clavicles, sternum, vertebrae and
#: humeri (scaled per subject: bone density); marrow the trabecular interior; the scapula plate is thin,
#: so its voxels mix cortical bone with marrow and muscle (partial volume at 2.5 mm). Blood and the
#: enhancing organs take their HU from the subject's contrast state (chest_organs.draw_contrast).
HU: dict[str, float] = {
    "air": -1000.0, "fat": -100.0, "breast": -50.0, "muscle": 45.0, "mediastinum": -40.0,
    "lung": -850.0, "cortical": 1250.0, "marrow": 220.0, "disc": 80.0,
    "scapula": 600.0, "canal": 15.0, "tumour": 35.0, "table_skin": 300.0, "table_core": -900.0,
}
CT_NOISE_SD_HU = 10.0
SUBJECT_ID_PREFIX = "2TP"  # task 2 (SE -> DE X-ray), thorax, centre P (phantom)


@dataclass(frozen=True)
class Tumour:
    """One lung tumour: ``label`` in the label map, ``centre_mm`` world RAS, ``diameter_mm``, ``hu`` (solid
    0-60, subsolid -450..-200), ``behind_rib_ap`` = its centre's AP ray crosses rib bone (>= 5 mm of rib
    along y), ``overlap`` = what its AP ray crosses besides lung: "rib", "heart", "diaphragm" or "none"."""

    label: int
    centre_mm: tuple[float, float, float]
    diameter_mm: float
    behind_rib_ap: bool
    hu: float = HU["tumour"]
    overlap: str = "none"


@dataclass
class ChestSubject:
    """One phantom. Arrays ``(X, Y, Z)`` on the grid of ``affine`` (4x4 voxel -> world mm, RAS;
    stored LAS: voxel axis 0 runs to the patient's left, like many scanner exports)."""

    ct: np.ndarray  # int16, HU
    tumour_labels: np.ndarray  # uint8, 0 = background, k = tumour k
    affine: np.ndarray
    tumours: list[Tumour]
    params: dict = field(default_factory=dict)  # breath, scale, sex, contrast, ... (JSON-serialisable)


#: Second entry of the seed of the rib-density draw (``make_chest_subject(rib_density=...)``): a stream of its own.
RIB_DENSITY_STREAM = 7
#: Second entry of the seed of the extra tumours' draws (``make_chest_subject(extra_tumours=...)``).
EXTRA_TUMOUR_STREAM = 8
#: The training phantoms' options that the chest benchmark chose (X-ray bundle docs, section 7, 2026-12-05): ribs
#: scaled per subject by a factor from this range (two pairs of 20-minute runs against 1) and this many extra
#: tumours behind ribs (three runs against five without). For training and validation phantoms only: held-out
#: phantoms keep their ribs and tumours as the seed made them (``scripts.benchmark_chest``, ``scripts.demo --chest``).
TRAINING_RIB_DENSITY = (0.8, 1.5)
TRAINING_EXTRA_TUMOURS = (2, 4)


def check_rib_density(rib_density: tuple[float, float]) -> tuple[float, float]:
    """``(low, high)`` of a rib-density factor range as floats; ``ValueError`` unless ``0 < low <= high``."""
    low, high = (float(v) for v in rib_density)
    if not 0 < low <= high:
        raise ValueError(f"LOW HIGH needs 0 < LOW <= HIGH, got {low:g} {high:g}")
    return low, high


def check_extra_tumours(extra_tumours: tuple[int, int]) -> tuple[int, int]:
    """``(low, high)`` of an extra-tumour count range as ints; ``ValueError`` unless ``0 <= low <= high <= 20``."""
    low, high = extra_tumours
    if not (float(low).is_integer() and float(high).is_integer() and 0 <= low <= high <= 20):
        raise ValueError(f"LOW HIGH needs whole numbers 0 <= LOW <= HIGH <= 20, got {low:g} {high:g}")
    return int(low), int(high)


def subject_id(index: int) -> str:
    """ID of the ``index``-th subject (0-based): 0 -> ``2TP001``."""
    return f"{SUBJECT_ID_PREFIX}{index + 1:03d}"


def make_chest_subject(*, seed: int, size: str | tuple[int, int, int] = "default", contrast: str | None = None,
                       arms: str | None = None, rib_density: tuple[float, float] | None = None,
                       extra_tumours: tuple[int, int] | None = None) -> ChestSubject:
    """Generate one chest CT phantom with tumour labels, deterministic in ``seed``.

    ``size``: ``"default"`` (160 x 128 x 144 at 2.5 mm), ``"tiny"`` (50 x 40 x 45 at 8 mm, for tests),
    or a shape covering the same 400 x 320 x 360 mm field of view. ``contrast`` ("none", "venous",
    "arterial") and ``arms`` ("side", "raised") force what is otherwise drawn from the seed; the rest of
    the subject stays the same. ``rib_density`` ``(low, high)``: the ribs' HU scaled by a factor drawn
    uniformly from that range, from a generator of its own (the anatomy and every other draw stay those of
    the seed; None: 1, the default phantoms). ``extra_tumours`` ``(low, high)``: that many more tumours (a count
    drawn uniformly, both ends included), each behind a rib in the AP direction where there is room, drawn from a
    generator of their own after the seed's 1-4 (everything else stays the seed's; None: none). Training
    phantoms with more nodules behind ribs teach a decomposition that a compact density under a rib is soft
    tissue, not bone (bundle docs of xray_dual_energy, section 7).
    """
    rng = np.random.default_rng(seed)
    shape, spacing = phantom_grid(size, sizes=SIZES, fov_mm=FOV_MM, min_voxels=16, what="chest phantom")
    axes = [((np.arange(n) - (n - 1) / 2.0) * sp).astype(np.float32) for n, sp in zip(shape, spacing)]
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    canvas = Canvas((x, y, z), float(spacing.min()), HU["air"])

    s = float(rng.uniform(0.88, 1.08))
    breath = float(rng.uniform(0.0, 1.0))
    female = bool(rng.random() < 0.5)
    fat_mm = float(rng.uniform(5.0, 30.0))
    t = make_thorax(rng, s=s, breath=breath, z_shift=float(rng.uniform(-25.0, 20.0)), arms=arms)
    contrast = draw_contrast(rng, contrast)
    muscle_mm = 14.0 * s
    a_z, b_z = t.cage(z)
    cage = ellipse_sdf(x, y - t.y_c, a_z, b_z)  # mm, < 0 inside the ribs' centre surface

    # Body: chest below the shoulders, neck above; flat back on the table. Then arms, breasts, muscle.
    wobble = smooth_noise(rng, shape, spacing, 80.0)
    neck = 1.0 / (1.0 + np.exp(-(z - t.rib_z[0] - 8.0 * s) / (10.0 * s)))
    half_width = (t.a_max + muscle_mm + fat_mm) * (1 - neck) + (60.0 * s + 0.3 * fat_mm) * neck
    front = (t.b_max + muscle_mm + 0.7 * fat_mm) * (1 - neck) + (55.0 * s + 0.3 * fat_mm) * neck
    back = (t.b_max + 32.0 * s + 0.5 * fat_mm) * (1 - neck) + (60.0 * s + 0.3 * fat_mm) * neck
    y_back = t.y_c - 0.93 * (t.b_max + 32.0 * s + 0.5 * fat_mm)
    body = np.maximum(ellipse_sdf(x, y - t.y_c, half_width, np.where(y > t.y_c, front, back)) - 5.0 * wobble,
                      y_back - y)
    canvas.paint(body, HU["fat"])
    inside = canvas.occupancy(body) > 0
    for side in (1.0, -1.0):
        head, direction = t.humerus(side)
        shoulder = lambda x, y, z, c=head: ellipsoid_sdf(x, y, z, c + [side * 4 * s, 0, 6 * s], np.array([42, 45, 48]) * s)
        arm = (head + 10.0 * s * direction, head + 400.0 * s * direction)
        for grow, value in ((0.6 * fat_mm, HU["fat"]), (0.0, HU["muscle"])):
            canvas.paint_in_box(head - 60 * s - grow, head + 60 * s + grow, lambda x, y, z: shoulder(x, y, z) - grow, value)
            region = canvas.union_of_capsules([(*arm, 40.0 * s + grow)])
            canvas.paint_region(region, value, record=None)
            if region is not None:
                inside[region[0]] |= region[1] < 0.5 * canvas.voxel
        inside |= canvas.occupancy(ellipsoid_sdf(x, y, z, head, np.array([45, 48, 52]) * s + 0.6 * fat_mm)) > 0
    if female:
        scale = rng.uniform(0.7, 1.3)
        for side in (1.0, -1.0):
            centre = (side * 80.0 * s, t.y_c + t.b_max + muscle_mm + 0.5 * fat_mm, t.rib_z[0] - 125.0 * s)
            breast = ellipsoid_sdf(x, y, z, centre, np.array([62.0, 48.0, 55.0]) * s * scale)
            canvas.paint(breast, HU["breast"])
            inside |= canvas.occupancy(breast) > 0
    canvas.paint(intersect(cage - muscle_mm * (1.0 + 0.25 * wobble), z - t.rib_z[0] - 20.0 * s), HU["muscle"])
    canvas.paint(intersect(ellipse_sdf(x, y - (t.y_c - t.b_max), 48.0 * s, 34.0 * s), z - t.rib_z[0] - 60 * s),
                 HU["muscle"])  # paraspinal muscles
    canvas.paint(intersect(ellipse_sdf(x, y - t.y_c + 10.0 * s, 46.0 * s, 40.0 * s), t.rib_z[0] - z), HU["muscle"])  # neck
    table = bool(rng.random() < 0.8)
    if table:
        top = y_back - 3.0 - 0.0005 * x ** 2
        skins = np.minimum(np.abs(y - top) - 1.5, np.abs(y - top + 38.0) - 1.5)
        core = intersect(y - top + 1.5, top - 36.5 - y)
        width = np.abs(x) - 230.0
        canvas.paint(np.maximum(core, width), HU["table_core"])
        canvas.paint(np.maximum(skins, width), float(rng.uniform(150.0, 450.0)))
        inside |= canvas.occupancy(np.maximum(np.minimum(skins, core), width)) > 0

    # Thoracic cavity, lungs, abdomen below the diaphragm.
    inner = cage + 3.2 * s + 1.0
    canvas.paint(intersect(inner, z - t.z_apex - 10.0), float(rng.uniform(-70.0, 10.0)))  # mediastinal fat
    dome = t.rib_z[0] - 170.0 * s - 40.0 * s * breath  # the left dome; the right one (over the liver) 12 mm higher
    domes = {1.0: dome + 12.0 * s, -1.0: dome}
    dome_z = np.where(x > 0, domes[1.0], domes[-1.0])
    z_dia = (dome_z - 45.0 * s * ((np.abs(x) - 55.0 * s) / t.a_max).clip(0, None) ** 2 * 3.0
             - 28.0 * s * (-(y - t.y_c) / t.b_max).clip(0, None) ** 1.5)
    mediastinum_half = 22.0 * s + 14.0 * s * ((y - t.y_c) / t.b_max).clip(0, None)
    lung_sdf = intersect(inner, z_dia - z, mediastinum_half - np.abs(x + 8.0 * s), z - t.z_apex)  # heart: left
    gravity = (-(y - t.y_c) / t.b_max).clip(-1, 1)
    lung_hu = HU["lung"] + 45.0 * (1.0 - breath) + 35.0 * gravity + 18.0 * smooth_noise(rng, shape, spacing, 12.0)
    lung_occ = canvas.paint(lung_sdf, lung_hu).copy()
    canvas.start_claiming()  # what is painted into the lungs from here on is not lung (tumour placement)
    abdomen_occ = paint_abdomen(canvas, t, rng, np.maximum(inner, z - z_dia), domes, contrast, HU)

    heart_occ, _ = paint_heart_and_vessels(canvas, t, rng, domes, contrast, HU, lung_occ)
    rib_scale = 1.0 if rib_density is None else float(
        np.random.default_rng([seed, RIB_DENSITY_STREAM]).uniform(*check_rib_density(rib_density)))
    rib_occ = paint_skeleton(canvas, t, rng, HU, rib_density=rib_scale)

    scan_top = float(rng.uniform(t.rib_z[0] - 25.0 * s, t.rib_z[0] + 35.0 * s)) if rng.random() < 0.4 else None
    if scan_top is not None:  # the scan range ends in the upper chest: nothing above it
        for volume, value in ((canvas.hu, HU["air"]), (inside, False), (lung_occ, 0.0)):
            volume[..., axes[2] > scan_top] = value
    overlaps = {"rib": rib_occ, "heart": heart_occ, "diaphragm": abdomen_occ}
    tumours, labels = _place_tumours(rng, canvas, lung_occ * (1.0 - canvas.claimed), overlaps, spacing)
    n_extra = 0
    if extra_tumours is not None:
        extra_rng = np.random.default_rng([seed, EXTRA_TUMOUR_STREAM])
        drawn = int(extra_rng.integers(check_extra_tumours(extra_tumours)[0], extra_tumours[1] + 1))
        before = len(tumours)
        tumours, labels = _place_tumours(extra_rng, canvas, lung_occ * (1.0 - canvas.claimed), overlaps, spacing,
                                         count=drawn, behind_rib=True, placed=(tumours, labels))
        n_extra = len(tumours) - before  # placed: a small lung may lack room for all of them
    hu = ndimage.gaussian_filter(canvas.hu, 0.5)  # scanner PSF
    hu += rng.standard_normal(hu.shape).astype(np.float32) * CT_NOISE_SD_HU * inside
    hu = np.where(inside, hu, HU["air"])

    # Storage LAS (voxel axis 0 -> patient's left) with the FOV centre at a subject-specific couch position.
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    offset = np.array([0.0, rng.uniform(-30, 30), rng.uniform(-400, -300)])
    affine[:3, 3] = offset - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    tumours = [Tumour(tm.label, tuple(float(c) for c in np.asarray(tm.centre_mm) + offset), tm.diameter_mm,
                      tm.behind_rib_ap, tm.hu, tm.overlap) for tm in tumours]
    params = {"seed": int(seed), "scale": s, "breath": breath, "female": female, "fat_mm": fat_mm,
              "rib_cage_half_width_mm": float(t.a_max), "rib_cage_half_depth_mm": float(t.b_max),
              "arms": "raised" if t.arms_raised else "side", "kyphosis_mm": t.kyphosis_mm,
              "scoliosis_mm": t.scoliosis_mm, "table": table, "scan_top_mm": scan_top,
              "contrast": {k: v for k, v in contrast.items()}, "rib_density": rib_scale,
              "extra_tumours": n_extra}
    return ChestSubject(ct=np.clip(np.rint(hu[::-1]), -1024, 3071).astype(np.int16),
                        tumour_labels=np.ascontiguousarray(labels[::-1]), affine=affine, tumours=tumours, params=params)


def _place_tumours(rng: np.random.Generator, canvas: Canvas, lung_free: np.ndarray, overlaps: dict[str, np.ndarray],
                   spacing: np.ndarray, *, count: int | None = None, behind_rib: bool = False,
                   placed: tuple[list[Tumour], np.ndarray] | None = None) -> tuple[list[Tumour], np.ndarray]:
    """1-4 tumours (diameters log-uniform 5-40 mm; 3 in 4 solid, else subsolid) fully inside a lung, 5 mm
    apart: tumour 1 behind a rib in the AP direction, tumour 2 clear of rib, heart and diaphragm, tumour 3
    behind the heart or the diaphragm, when possible. ``lung_free``: lung occupancy less what was painted
    into it later (heart, vessels, airways, bones), whatever their HU, so contrast does not move the
    tumours; ``overlaps``: occupancy of ribs, heart and abdomen. ``count`` tumours instead of the drawn
    1-4, every one behind a rib where possible with ``behind_rib``, added to the ``placed`` tumours and labels
    (5 mm from them too). Returns frame-mm tumours + labels."""
    x, y, z = canvas.axes
    lung = lung_free > 0.5
    depth = ndimage.distance_transform_edt(lung, sampling=spacing)  # mm to the lung's edge
    ap_mm = {name: occ.sum(axis=1) * spacing[1] for name, occ in overlaps.items()}  # (X, Z): along each AP line
    labels = np.zeros(canvas.hu.shape, dtype=np.uint8) if placed is None else placed[1].copy()
    tumours: list[Tumour] = [] if placed is None else list(placed[0])
    for index in range(int(rng.integers(1, 5)) if count is None else count):
        diameter = float(np.exp(rng.uniform(np.log(5.0), np.log(40.0))))
        density = float(rng.uniform(0.0, 60.0) if rng.random() < 0.75 else rng.uniform(-450.0, -200.0))
        candidates = np.argwhere(depth >= diameter / 2 + 3.0)
        if len(candidates):
            on = {name: a[candidates[:, 0], candidates[:, 2]] for name, a in ap_mm.items()}
            behind_organ = (on["heart"] >= 20.0) | (on["diaphragm"] >= 20.0)
            want = (on["rib"] >= 5.0 if behind_rib else
                    {0: on["rib"] >= 5.0, 1: (on["rib"] < 5.0) & ~behind_organ, 2: behind_organ}.get(index))
            if want is not None and want.any():
                candidates = candidates[want]
        rng.shuffle(candidates)
        for i, j, kk in candidates[:200]:
            centre = np.array([x[i], y[j], z[kk]], float)
            gaps = [np.linalg.norm(centre - np.asarray(tm.centre_mm)) - (diameter + tm.diameter_mm) / 2 for tm in tumours]
            if all(gap > 5.0 for gap in gaps):
                break
        else:
            continue
        semi = diameter / 2 * rng.uniform(0.85, 1.15, 3)
        occ = canvas.paint(ellipsoid_sdf(x[:, None, None], y[None, :, None], z[None, None, :], centre, semi), density)
        mask = occ >= 0.5
        mask[i, j, kk] = True  # a 5 mm tumour on an 8 mm grid still gets its voxel
        labels[mask] = len(tumours) + 1
        crossed = {name: a[i, kk] for name, a in ap_mm.items()}
        overlap = ("rib" if crossed["rib"] >= 5.0 else "heart" if crossed["heart"] >= 20.0
                   else "diaphragm" if crossed["diaphragm"] >= 20.0 else "none")
        tumours.append(Tumour(len(tumours) + 1, tuple(centre), diameter, bool(crossed["rib"] >= 5.0), density, overlap))
    return tumours, labels
