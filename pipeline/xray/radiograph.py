"""DRR realism: scatter, quantum noise and detector blur on noiseless log images, as functions and a
MONAI-style dictionary transform. What makes a DRR look like a radiograph (DeepDRR, Unberath et al.
2018, models the same three effects: scatter, quantum + electronic noise, detector response).

Input: noiseless flat-field log images ``l = -ln(P)`` (``(H, W)``, dimensionless; ``P = I/I0`` the
primary transmission) from :func:`pipeline.xray_physics.xray_images`. Per exposure::

    S  = (spr / l_ref) * G_scatter (*) (P * l)     scatter: scatter-to-primary kernel model
    N  = Poisson(n0 * eta * (P + S))               quantum noise, n0 = photons per pixel in air
    I  = G_psf (*) (N / (n0 * eta))                detector blur (MTF as a Gaussian PSF)
    l' = -ln(I)                                    flat-field corrected log image

``G`` are normalised Gaussians (sigma in mm at the detector). ``n0`` comes from spekpy's fluence per
mAs at 1 m (:func:`photons_per_pixel`) times the exposure (mAs), the pixel area and the inverse square
law to the detector; ``eta`` is the detector's quantum efficiency. Poisson counts are drawn as
``lambda + sqrt(lambda) * z`` with a seeded standard-normal field ``z`` (the Gaussian limit, exact to
< 1 % for lambda > 100 counts, the regime of every pixel here): one field per *exposure*, so the SE image
and the high-kVp DE image, one 120 kVp exposure, share theirs (the SE keeps its scatter, the DE pair
is scatter-corrected unless ``scatter_in_de``), and the low-kVp exposure has its own;
all are fixed by ``seed``. Dual-energy images are then re-derived from the noisy low/high pair, so
they carry the amplified noise of a real DE subtraction. Parameters and sources: docs/xray_physics.md.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy import ndimage

from pipeline.xray.physics import AL_FILTER_MM, ANODE_ANGLE_DEG, dual_energy_subtraction

#: Log attenuation at which ``RealismConfig.spr`` is quoted: ~20 cm of water at 120 kVp (mu ~ 0.2 / cm),
#: a mid-chest path.
REFERENCE_LOG_ATTENUATION = 4.0


@dataclass(frozen=True)
class RealismConfig:
    """Switchable realism. ``enabled=False`` returns the noiseless images unchanged.

    Exposures (mAs) per kVp role, scatter-to-primary ratio ``spr`` of a uniform slab of log attenuation
    :data:`REFERENCE_LOG_ATTENUATION` (with an anti-scatter grid), scatter kernel and detector PSF
    sigmas (mm at the detector), detector quantum efficiency ``eta``, and the seed of the noise fields.
    ``scatter_in_de`` False (default): the low/high pair is scatter-corrected before the DE subtraction
    (the expected scatter is subtracted from the counts, its quantum noise stays), as DE systems do:
    uncorrected scatter shifts the two log images differently and breaks the cancellation (on the
    chest phantom the mediastinum of the bone image drops from 0.87 to -0.17). The SE image keeps
    its scatter.
    """

    enabled: bool = True
    mas_high: float = 2.0
    mas_low: float = 10.0
    spr: float = 0.5
    scatter_sigma_mm: float = 50.0
    psf_sigma_mm: float = 0.15
    quantum_efficiency: float = 0.6
    seed: int = 0
    scatter_in_de: bool = False

    def __post_init__(self) -> None:
        if min(self.mas_high, self.mas_low) <= 0 or self.spr < 0 or self.scatter_sigma_mm <= 0:
            raise ValueError("need mAs > 0, spr >= 0 and scatter_sigma_mm > 0")
        if self.psf_sigma_mm < 0 or not 0 < self.quantum_efficiency <= 1:
            raise ValueError("need psf_sigma_mm >= 0 and 0 < quantum_efficiency <= 1")


@lru_cache(maxsize=64)
def _fluence_per_mas_at_1m(kvp: float, al_filter_mm: float = AL_FILTER_MM) -> float:
    """Photons / cm^2 / mAs at 100 cm for the project's tube model (spekpy, tungsten, 12 deg, Al filter)."""
    import spekpy

    spek = spekpy.Spek(kvp=float(kvp), th=ANODE_ANGLE_DEG)
    spek.filter("Al", float(al_filter_mm))
    return float(spek.get_flu())


def photons_per_pixel(kvp: float, *, mas: float, pixel_spacing_mm: float | tuple[float, float],
                      sdd_mm: float = 1500.0, al_filter_mm: float = AL_FILTER_MM) -> float:
    """Unattenuated photons reaching one detector pixel: fluence(1 m) x mAs x area x (1000 / SDD)^2."""
    pitch = np.broadcast_to(np.asarray(pixel_spacing_mm, dtype=float), (2,))
    area_cm2 = float(pitch[0] * pitch[1]) / 100.0
    return _fluence_per_mas_at_1m(float(kvp), float(al_filter_mm)) * mas * area_cm2 * (1000.0 / sdd_mm) ** 2


def add_scatter(primary: np.ndarray, *, spr: float, sigma_px: float,
                reference_log: float = REFERENCE_LOG_ATTENUATION) -> np.ndarray:
    """Primary + scatter: ``S = (spr / l_ref) * G_sigma (*) (P * l)`` with ``l = -ln P``.

    The scatter emitted along a ray grows with the material it crosses (``l``) and with the photons
    that get there (``P``); the Gaussian kernel spreads it over the detector. For a uniform slab of
    ``l = reference_log`` the scatter-to-primary ratio is exactly ``spr``; where nothing attenuates
    (air beside the body) no scatter is emitted, but scatter from the body spreads into it.
    """
    source = primary * -np.log(np.clip(primary, 1e-12, 1.0))
    kernel = ndimage.gaussian_filter(source, sigma_px, mode="reflect", truncate=3.0)
    return primary + (spr / reference_log) * kernel


def quantum_noise(intensity: np.ndarray, *, photons: float, normal: np.ndarray) -> np.ndarray:
    """Relative intensity after counting ``photons * intensity`` quanta: Gaussian limit of Poisson,
    ``(lam + sqrt(lam) z) / photons``, with the standard-normal field ``normal`` (same shape)."""
    lam = np.maximum(intensity * photons, 1.0)
    return (lam + np.sqrt(lam) * normal) / photons


def detector_blur(intensity: np.ndarray, *, sigma_px: float) -> np.ndarray:
    """Gaussian PSF (sigma in pixels); MTF(f) = exp(-2 pi^2 sigma^2 f^2)."""
    return ndimage.gaussian_filter(intensity, sigma_px, mode="reflect") if sigma_px > 0 else intensity


def noise_field(seed: int, exposure: int, shape: tuple[int, int]) -> np.ndarray:
    """The standard-normal field of exposure ``exposure`` (0 = high kVp / SE, 1 = low kVp) for ``seed``."""
    return np.random.default_rng([int(seed), int(exposure)]).standard_normal(shape)


def realistic_log_image(log_primary: np.ndarray | torch.Tensor, *, photons: float, spr: float,
                        scatter_sigma_px: float, psf_sigma_px: float, normal: np.ndarray,
                        quantum_efficiency: float = 1.0, subtract_scatter: bool = False) -> np.ndarray:
    """One exposure: noiseless log image ``(H, W)`` -> scatter + noise + blur -> log image (float32).

    ``subtract_scatter``: remove the expected scatter from the noisy counts (an ideal scatter
    correction: the bias goes, the scattered photons' noise stays)."""
    primary = np.exp(-np.asarray(torch.as_tensor(log_primary).detach().cpu(), dtype=np.float64))
    total = add_scatter(primary, spr=spr, sigma_px=scatter_sigma_px) if spr > 0 else primary
    counted = quantum_noise(total, photons=photons * quantum_efficiency, normal=normal)
    if subtract_scatter:
        counted = counted - (total - primary)
    blurred = detector_blur(counted, sigma_px=psf_sigma_px)
    floor = 0.5 / (photons * quantum_efficiency)  # half a quantum: keeps the log finite
    return (-np.log(np.maximum(blurred, floor))).astype(np.float32)


def realistic_xray_images(images: Mapping[str, torch.Tensor | np.ndarray], *, config: RealismConfig,
                          pixel_spacing_mm: float, sdd_mm: float = 1500.0, kvp_se: float = 120.0,
                          kvp_low: float = 60.0, kvp_high: float = 120.0, seed: int | None = None,
                          noiseless: bool = False, al_filter_mm: float = AL_FILTER_MM) -> dict[str, torch.Tensor]:
    """Apply the realism chain to ``{"se", "low", "high", ...}`` noiseless log images and re-derive
    ``de_soft`` / ``de_bone`` from the noisy low/high pair. Returns float32 tensors ``(H, W)``.

    ``seed`` (default ``config.seed``) fixes the noise: the same seed gives the same realisation; the SE
    image and the high-kVp image share their noise field (one exposure when ``kvp_se == kvp_high``).
    ``noiseless``: the same chain with every noise field zero (scatter, its correction and the detector
    blur kept): the expected images, the references the bone leak is measured against
    (:mod:`pipeline.xray.evaluation`). With ``config.enabled`` False the input is returned (as tensors)
    unchanged. ``al_filter_mm``: the tubes' aluminium filtration (photon counts and DE weights).
    """
    out = {k: torch.as_tensor(v) for k, v in images.items()}
    if not config.enabled:
        return out

    seed = config.seed if seed is None else int(seed)
    shape = tuple(out["high"].shape)

    def normal(index: int) -> np.ndarray:
        return np.zeros(shape) if noiseless else noise_field(seed, index, shape)

    common = {"spr": config.spr, "scatter_sigma_px": config.scatter_sigma_mm / pixel_spacing_mm,
              "psf_sigma_px": config.psf_sigma_mm / pixel_spacing_mm,
              "quantum_efficiency": config.quantum_efficiency}
    noiseless_high = out["high"]
    exposures = {"high": (kvp_high, config.mas_high, 0), "low": (kvp_low, config.mas_low, 1)}
    for key, (kvp, mas, index) in exposures.items():
        photons = photons_per_pixel(kvp, mas=mas, pixel_spacing_mm=pixel_spacing_mm, sdd_mm=sdd_mm,
                                    al_filter_mm=al_filter_mm)
        out[key] = torch.from_numpy(realistic_log_image(out[key], photons=photons,
                                                        normal=normal(index),
                                                        subtract_scatter=not config.scatter_in_de, **common))
    if "se" in out:  # with kvp_se == kvp_high the same exposure as "high": same counts, scatter kept
        photons = photons_per_pixel(kvp_se, mas=config.mas_high, pixel_spacing_mm=pixel_spacing_mm, sdd_mm=sdd_mm,
                                    al_filter_mm=al_filter_mm)
        source = noiseless_high if kvp_se == kvp_high else out["se"]
        out["se"] = torch.from_numpy(realistic_log_image(source, photons=photons, normal=normal(0),
                                                         **common))
    out.update(dual_energy_subtraction(out["low"], out["high"], kvp_low=kvp_low, kvp_high=kvp_high,
                                       al_filter_mm=al_filter_mm))
    return out


class RadiographRealismd(MapTransform):
    """Dictionary transform: noiseless ``se`` / ``low`` / ``high`` log images under ``keys`` (in that
    role order) -> realistic images, and ``de_soft`` / ``de_bone`` recomputed into ``de_keys``.

    The noise seed is ``data[seed_key]`` when given (e.g. a projection index), else ``config.seed``;
    the pixel pitch (mm at the detector) is ``pixel_spacing_mm`` or ``data[pixel_spacing_key]``.
    """

    def __init__(self, keys: KeysCollection = ("se", "low", "high"), *, config: RealismConfig = RealismConfig(),
                 pixel_spacing_mm: float | None = None, pixel_spacing_key: str | None = None,
                 seed_key: str | None = None, de_keys: Sequence[str] = ("de_soft", "de_bone"),
                 sdd_mm: float = 1500.0, kvps: Sequence[float] = (120.0, 60.0, 120.0)) -> None:
        super().__init__(keys)
        if len(self.keys) != 3 or len(kvps) != 3:
            raise ValueError("keys and kvps are (se, low, high)")
        if (pixel_spacing_mm is None) == (pixel_spacing_key is None):
            raise ValueError("give exactly one of pixel_spacing_mm or pixel_spacing_key")
        self.config, self.pixel_spacing_mm, self.pixel_spacing_key = config, pixel_spacing_mm, pixel_spacing_key
        self.seed_key, self.de_keys, self.sdd_mm, self.kvps = seed_key, tuple(de_keys), sdd_mm, tuple(kvps)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        se, low, high = self.keys
        pitch = self.pixel_spacing_mm if self.pixel_spacing_mm is not None else float(d[self.pixel_spacing_key])
        seed = int(d[self.seed_key]) if self.seed_key is not None else None
        result = realistic_xray_images({"se": d[se], "low": d[low], "high": d[high]}, config=self.config,
                                       pixel_spacing_mm=pitch, sdd_mm=self.sdd_mm, kvp_se=self.kvps[0],
                                       kvp_low=self.kvps[1], kvp_high=self.kvps[2], seed=seed)
        d[se], d[low], d[high] = result["se"], result["low"], result["high"]
        if self.config.enabled:
            d[self.de_keys[0]], d[self.de_keys[1]] = result["de_soft"], result["de_bone"]
        return d


__all__: Sequence[str] = [
    "REFERENCE_LOG_ATTENUATION", "RealismConfig", "photons_per_pixel", "add_scatter", "quantum_noise",
    "detector_blur", "noise_field",
    "realistic_log_image", "realistic_xray_images", "RadiographRealismd",
]
