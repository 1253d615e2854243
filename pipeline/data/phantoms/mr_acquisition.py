"""MR acquisition of a phantom head: sequence families, scanner-to-scanner variation, and the MR/CT misregistration.

An MR family is a sequence type with its signal equation; every subject gets its own scanner (field
strength, sequence parameters, resolution, coil, SNR) drawn from the family's ranges
(:func:`draw_protocol`), and its own tissue relaxation times (:func:`draw_tissue_jitter`):

| family | signal (per tissue, before mixing) | parameters drawn per subject |
|---|---|---|
| ``spgr`` (T1w 3D spoiled gradient echo, FLASH/SPGR) | PD sin(a)(1 - E1)/(1 - cos(a) E1) exp(-TE/T2*) | TR 8-25 ms, TE 2-5 ms, flip 12-30 deg |
| ``mprage`` (T1w inversion-recovery gradient echo) | PD (1 - 2 exp(-TI/T1) + exp(-TR/T1)) sin(a) exp(-TE/T2*), magnitude after mixing | 1.5 T: TR 1900-2400 ms, TI 800-1000 ms; 3 T: TR 2000-2500 ms, TI 900-1100 ms; flip 7-10 deg, TE 2-4.5 ms |
| ``t2_tse`` (T2w turbo spin echo) | PD (1 - exp(-TR/T1)) exp(-TE/T2) | TR 3000-6000 ms, TE 80-120 ms |

E1 = exp(-TR/T1); field 1.5 T or 3 T (T1 and T2* from :data:`~pipeline.data.phantoms.head_tissues.HEAD_TISSUES`).
The image then goes through what a scanner adds (:func:`acquire_mr`): a Gaussian point spread (thicker
along a random acquisition axis), a smooth multiplicative bias field, the head coil's fall-off towards
the neck, Rician noise at a drawn SNR, and an arbitrary scale. Finally the MR is resampled onto the CT
grid through a small rigid + elastic displacement (:func:`misregister`): the residual error of a real
MR-to-CT registration (sub-millimetre to about 1 mm).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from pipeline.data.phantoms.anatomy import smooth_noise
from pipeline.data.phantoms.dataset import rotation_matrix
from pipeline.data.phantoms.head_tissues import HEAD_TISSUES, SUBJECT_JITTER, HeadTissue

__all__ = ["FAMILIES", "MRProtocol", "Misregistration", "TissueJitter", "acquire_mr", "draw_misregistration",
           "draw_protocol", "draw_tissue_jitter", "misregister", "misregistration_coordinates", "resample_at",
           "tissue_signals"]

FAMILIES = ("spgr", "mprage", "t2_tse")


@dataclass(frozen=True)
class MRProtocol:
    """One subject's scanner and sequence (ms, degrees, mm; written beside the phantom as JSON)."""

    family: str
    field_t: float
    tr_ms: float
    te_ms: float
    flip_deg: float
    ti_ms: float  # 0 without inversion
    psf_sigma_mm: tuple[float, float, float]  # Gaussian point spread along the grid axes
    bias_sd: float  # SD of the log bias field
    bias_scale_mm: float
    coil_edge_mm: float  # frame z (mm) where the coil's sensitivity has fallen half-way to coil_floor
    coil_width_mm: float
    coil_floor: float
    snr_wm: float  # white-matter signal / Rician sigma
    scale: float  # arbitrary intensity unit

    def as_dict(self) -> dict:
        return asdict(self)


def draw_protocol(rng: np.random.Generator, family: str) -> MRProtocol:
    """A scanner of ``family`` (one of :data:`FAMILIES`) with parameters drawn from the ranges above."""
    if family not in FAMILIES:
        raise ValueError(f"unknown MR family {family!r}; choose one of {FAMILIES}")
    field = float(rng.choice([1.5, 3.0]))
    if family == "spgr":
        tr, te, flip, ti = rng.uniform(8.0, 25.0), rng.uniform(2.0, 5.0), rng.uniform(12.0, 30.0), 0.0
    elif family == "mprage":  # inversion time chosen for the field, as sites do, so grey matter is never nulled
        tr, ti = (rng.uniform(1900.0, 2400.0), rng.uniform(800.0, 1000.0)) if field < 2.0 else \
            (rng.uniform(2000.0, 2500.0), rng.uniform(900.0, 1100.0))
        te, flip = rng.uniform(2.0, 4.5), rng.uniform(7.0, 10.0)
    else:
        tr, te, flip, ti = rng.uniform(3000.0, 6000.0), rng.uniform(80.0, 120.0), 90.0, 0.0
    psf = [rng.uniform(0.3, 0.6)] * 3
    psf[int(rng.integers(3))] = rng.uniform(0.4, 1.2)  # the acquisition's slice (or slowest) direction
    return MRProtocol(
        family=family, field_t=field, tr_ms=float(tr), te_ms=float(te), flip_deg=float(flip), ti_ms=float(ti),
        psf_sigma_mm=tuple(float(p) for p in psf), bias_sd=float(rng.uniform(0.05, 0.25)),
        bias_scale_mm=float(rng.uniform(60.0, 120.0)), coil_edge_mm=float(rng.uniform(-110.0, -60.0)),
        coil_width_mm=float(rng.uniform(8.0, 20.0)), coil_floor=float(rng.uniform(0.25, 0.7)),
        snr_wm=float(rng.uniform(12.0, 40.0)), scale=float(rng.uniform(300.0, 3000.0)),
    )


@dataclass(frozen=True)
class TissueJitter:
    """One subject's multiplicative deviations from the table, per tissue (arrays indexed by label)."""

    proton_density: np.ndarray
    t1: np.ndarray
    t2: np.ndarray


def draw_tissue_jitter(rng: np.random.Generator) -> TissueJitter:
    """Log-normal per-tissue factors with the SDs of :data:`SUBJECT_JITTER` (the subject's tissues, not
    the scanner: the same for every MR family of a subject)."""
    n = len(HeadTissue)
    draw = lambda sd: np.exp(rng.normal(0.0, sd, size=n))  # noqa: E731
    return TissueJitter(draw(SUBJECT_JITTER["proton_density"]), draw(SUBJECT_JITTER["t1"]), draw(SUBJECT_JITTER["t2"]))


def tissue_signals(protocol: MRProtocol, jitter: TissueJitter | None = None) -> np.ndarray:
    """Signed signal of each pure tissue ``(len(HeadTissue),)`` float64 under ``protocol`` (PD = 1 water)."""
    f = 0 if protocol.field_t < 2.0 else 1
    props = [HEAD_TISSUES[t] for t in HeadTissue]
    pd = np.array([p.proton_density for p in props])
    t1 = np.array([p.t1_ms[f] for p in props])
    t2 = np.array([p.t2_ms[f] for p in props])
    t2s = np.array([p.t2star_ms[f] for p in props])
    if jitter is not None:
        pd, t1, t2, t2s = pd * jitter.proton_density, t1 * jitter.t1, t2 * jitter.t2, t2s * jitter.t2
    a = np.deg2rad(protocol.flip_deg)
    e1 = np.exp(-protocol.tr_ms / t1)
    if protocol.family == "spgr":
        return pd * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-protocol.te_ms / t2s)
    if protocol.family == "mprage":
        return pd * (1 - 2 * np.exp(-protocol.ti_ms / t1) + e1) * np.sin(a) * np.exp(-protocol.te_ms / t2s)
    return pd * (1 - e1) * np.exp(-protocol.te_ms / t2)


def acquire_mr(rng: np.random.Generator, fractions: np.ndarray, protocol: MRProtocol, *, spacing: np.ndarray,
               qz: np.ndarray, jitter: TissueJitter | None = None,
               textures: dict[int, tuple[np.ndarray, float]] | None = None) -> np.ndarray:
    """MR magnitude ``(X, Y, Z)`` float32 of tissue ``fractions`` ``(K, X, Y, Z)`` on the phantom's grid.

    ``qz``: frame superior coordinate (mm) of every voxel (for the coil's fall-off towards the neck);
    ``textures``: tissue label -> (unit-SD field, relative amplitude) modulating that tissue's signal
    (the same fields modulate the CT, so texture is shared anatomy, not noise).
    """
    signal = tissue_signals(protocol, jitter).astype(np.float32)
    signal /= max(float(np.abs(signal).max()), 1e-12)
    mr = np.tensordot(signal, fractions, axes=1)
    for tissue, (field, amplitude) in (textures or {}).items():
        mr += fractions[tissue] * (signal[tissue] * amplitude) * field
    mr = np.abs(mr)  # magnitude image: an inversion-recovery mix of opposite signs cancels in the voxel
    mr = ndimage.gaussian_filter(mr, np.asarray(protocol.psf_sigma_mm) / np.asarray(spacing))
    mr *= np.exp(protocol.bias_sd * smooth_noise(rng, mr.shape, spacing, protocol.bias_scale_mm))
    coil = 1.0 / (1.0 + np.exp(-np.clip((qz - protocol.coil_edge_mm) / protocol.coil_width_mm, -30, 30)))
    mr *= protocol.coil_floor + (1.0 - protocol.coil_floor) * coil
    sigma = abs(float(signal[HeadTissue.WHITE_MATTER])) / protocol.snr_wm
    noise = rng.standard_normal((2, *mr.shape), dtype=np.float32) * np.float32(sigma)
    mr = np.sqrt((mr + noise[0]) ** 2 + noise[1] ** 2)  # magnitude of complex Gaussian noise: Rician
    return (mr * protocol.scale).astype(np.float32)


@dataclass(frozen=True)
class Misregistration:
    """Where the MR's anatomy sits relative to the CT's: rigid (degrees about x, y, z; mm) plus elastic."""

    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    elastic_sd_mm: float
    elastic_scale_mm: float

    def as_dict(self) -> dict:
        return asdict(self)


def draw_misregistration(rng: np.random.Generator) -> Misregistration:
    """A residual registration error: rotation SD 0.1-0.35 deg, translation SD 0.1-0.45 mm per axis,
    elastic 0.15-0.45 mm SD at a 30-60 mm scale: 0.3-1.3 mm RMS over a head (median 0.7 mm), at most
    2-3 mm at its edge."""
    rot_sd, shift_sd = rng.uniform(0.1, 0.35), rng.uniform(0.1, 0.45)
    return Misregistration(
        rotation_deg=tuple(float(v) for v in rng.normal(0.0, rot_sd, 3)),
        translation_mm=tuple(float(v) for v in rng.normal(0.0, shift_sd, 3)),
        elastic_sd_mm=float(rng.uniform(0.15, 0.45)), elastic_scale_mm=float(rng.uniform(30.0, 60.0)),
    )


def misregistration_coordinates(rng: np.random.Generator, shape: tuple[int, int, int], affine: np.ndarray, centre_mm,
                                mis: Misregistration) -> tuple[np.ndarray, np.ndarray]:
    """Where each voxel of the grid ``shape`` / ``affine`` (voxel -> world mm) samples the moved image: the
    displacement ``d(x) = (R - I)(x - centre) + t + e(x)`` in voxel coordinates, ``(3, X, Y, Z)`` float32, and
    ``|d|`` in mm, ``(X, Y, Z)`` float32. Draws the elastic field from ``rng``; kept apart from the resampling
    so that other images (the registration floor of :mod:`~pipeline.data.phantoms.detailed_head`) can be
    moved exactly as the MR was."""
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    linear, origin = affine[:3, :3], affine[:3, 3]
    rot = rotation_matrix(mis.rotation_deg) - np.eye(3)
    to_voxel = np.linalg.inv(linear)
    m = to_voxel @ rot @ linear  # (R - I) in voxel units
    b = to_voxel @ (rot @ (origin - np.asarray(centre_mm)) + np.asarray(mis.translation_mm))
    elastic = [mis.elastic_sd_mm * smooth_noise(rng, shape, spacing, mis.elastic_scale_mm) for _ in range(3)]
    ijk = np.ogrid[: shape[0], : shape[1], : shape[2]]
    coords = np.empty((3, *shape), dtype=np.float32)
    magnitude = np.zeros(shape, dtype=np.float32)
    for a in range(3):
        d_voxel = sum(float(m[a, c]) * ijk[c] for c in range(3)) + b[a] + sum(float(to_voxel[a, c]) * elastic[c] for c in range(3))
        coords[a] = ijk[a] + d_voxel
    for a in range(3):  # the displacement in world mm, for the record
        magnitude += (sum(float(linear[a, c]) * (coords[c] - ijk[c]) for c in range(3))) ** 2
    return coords, np.sqrt(magnitude)


def resample_at(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``image`` sampled at voxel ``coords`` ``(3, X, Y, Z)``: trilinear, as a registration's resampler, float32."""
    return ndimage.map_coordinates(image, coords, order=1, mode="nearest", output=np.float32)


def misregister(rng: np.random.Generator, image: np.ndarray, affine: np.ndarray, centre_mm,
                mis: Misregistration) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``image`` (on the grid of ``affine``, voxel -> world mm) through the displacement
    ``d(x) = (R - I)(x - centre) + t + e(x)``: the result at ``x`` is the image at ``x + d(x)``
    (trilinear, as a registration's resampler). Returns ``(image, |d| in mm)``, both ``(X, Y, Z)`` float32."""
    coords, magnitude = misregistration_coordinates(rng, image.shape, affine, centre_mm, mis)
    return resample_at(image, coords), magnitude
