"""Polyenergetic X-ray physics for DRRs: tube spectra, mass attenuation, detected intensities, and
dual-energy (DE) weighted log subtraction.

Units: energies in keV, mass attenuation coefficients mu/rho in cm^2/g, material line integrals
(areal densities) in g/cm^2, intensities as I/I0 in (0, 1]. Materials are named by the keys of
:data:`MATERIALS`; the projector in :mod:`transforms.drr` produces line integrals in the channel
order :data:`transforms.drr.MATERIAL_NAMES` (soft tissue, bone).

Model (energy-integrating flat panel, flat-field corrected, no scatter, no noise)::

    I/I0 = sum_E S(E) E exp(-sum_m (mu/rho)_m(E) L_m)  /  sum_E S(E) E
    l    = -ln(I/I0)                                      (log image, dimensionless)

Dual energy (low kVp ``L``, high kVp ``H``) with effective (spectrum-weighted) coefficients
``mu_m^L, mu_m^H`` so that ``l_L ~ mu_s^L L_s + mu_b^L L_b`` and ``l_H ~ mu_s^H L_s + mu_b^H L_b``::

    w_b  = mu_b^H / mu_b^L     (bone-cancelling weight)   w_s = mu_s^H / mu_s^L  (tissue-cancelling)
    soft = (l_H - w_b l_L) / (1 - w_b / w_s)   ~  mu_s^H L_s   (bone cancelled)
    bone = (l_H - w_s l_L) / (1 - w_s / w_b)   ~  mu_b^H L_b   (soft tissue cancelled)

The normalisation makes ``soft + bone ~ l_H``: each DE image reads as "the high-kVp log image of that
material alone". See docs/xray_physics.md for the derivation, the reference background used for the
effective coefficients (beam hardening makes them thickness dependent) and the checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

# ICRU Report 44 compositions (mass fractions) and densities, as tabulated by NIST
# (physics.nist.gov/PhysRefData/XrayMassCoef/tab2.html).
MATERIALS: dict[str, tuple[float, dict[str, float]]] = {
    "soft_tissue": (1.06, {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003,
                           "S": 0.003, "Cl": 0.002, "K": 0.003}),
    "bone": (1.92, {"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002,
                    "P": 0.103, "S": 0.003, "Ca": 0.225}),
}

#: Tube model defaults: tungsten anode angle (deg) and inherent + added aluminium filtration (mm).
ANODE_ANGLE_DEG = 12.0
AL_FILTER_MM = 2.5
ENERGY_BIN_KEV = 1.0

SE_KVP = 120.0
DE_LOW_KVP = 60.0
DE_HIGH_KVP = 120.0

#: Reference background for the effective DE coefficients (see :func:`effective_mass_attenuation`):
#: ~15 cm of soft tissue is a typical water-equivalent AP path through the chest/abdomen, and 1 g/cm^2
#: of bone (~5 mm cortical bone) a typical rib/vertebra insert.
REFERENCE_SOFT_TISSUE_G_CM2 = 15.0
REFERENCE_INSERT_G_CM2 = 1.0


@dataclass(frozen=True)
class Spectrum:
    """A binned tube spectrum: ``energies_kev`` (E,) bin centres and ``fluence`` (E,) photons per bin
    (arbitrary scale). Arrays are read-only because instances are cached and shared."""

    kvp: float
    energies_kev: np.ndarray
    fluence: np.ndarray

    @property
    def mean_energy_kev(self) -> float:
        return float((self.energies_kev * self.fluence).sum() / self.fluence.sum())

    @property
    def detector_weights(self) -> np.ndarray:
        """Normalised energy-integrating weights S(E)*E / sum(S(E)*E), shape (E,)."""
        w = self.fluence * self.energies_kev
        return w / w.sum()


@lru_cache(maxsize=64)
def tube_spectrum(kvp: float, *, anode_angle_deg: float = ANODE_ANGLE_DEG,
                  al_filter_mm: float = AL_FILTER_MM, bin_kev: float = ENERGY_BIN_KEV) -> Spectrum:
    """Tungsten-anode spectrum from spekpy (cached per argument set; ~0.2-0.5 s the first time).

    Bins of ``bin_kev`` (spekpy's ``dk``); bins with zero fluence are dropped (they only cost time).
    """
    try:
        import spekpy  # ~160 MB, optional extra `rtsynth[xray]`, so imported lazily
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("tube spectra need spekpy: pip install 'rtsynth[xray]'") from err
    if not 20.0 <= kvp <= 150.0:
        raise ValueError(f"kVp {kvp} outside the diagnostic range 20-150 kVp")
    spek = spekpy.Spek(kvp=float(kvp), th=float(anode_angle_deg), dk=float(bin_kev))
    if al_filter_mm > 0:
        spek.filter("Al", float(al_filter_mm))
    energies, fluence = spek.get_spectrum(diff=False)  # photons per bin
    keep = fluence > fluence.max() * 1e-9
    energies = np.asarray(energies[keep], dtype=np.float64)
    fluence = np.asarray(fluence[keep], dtype=np.float64)
    energies.setflags(write=False)
    fluence.setflags(write=False)
    return Spectrum(kvp=float(kvp), energies_kev=energies, fluence=fluence)


@lru_cache(maxsize=64)
def _mass_attenuation_cached(material: str, energies_kev: tuple[float, ...]) -> np.ndarray:
    import xraydb

    if material not in MATERIALS:
        raise KeyError(f"unknown material {material!r}; known: {sorted(MATERIALS)}")
    _, fractions = MATERIALS[material]
    energies_ev = np.asarray(energies_kev, dtype=np.float64) * 1000.0
    # Mixture rule (mu/rho) = sum_i w_i (mu/rho)_i over elements by mass fraction: exactly what
    # xraydb.material_mu does after converting a formula to mass fractions, without the round trip.
    # mu_elam 'total' includes coherent scattering, like NIST XCOM's "total with coherent".
    table = sum(w * np.asarray(xraydb.mu_elam(el, energies_ev, kind="total")) for el, w in fractions.items())
    table = np.asarray(table, dtype=np.float64)
    table.setflags(write=False)
    return table


def mass_attenuation(material: str, energies_kev: Sequence[float] | np.ndarray) -> np.ndarray:
    """Mass attenuation coefficient mu/rho (cm^2/g) of an ICRU-44 material at ``energies_kev`` (keV).

    Cached per (material, energy grid). Returns a read-only float64 array shaped like ``energies_kev``.
    """
    energies = np.atleast_1d(np.asarray(energies_kev, dtype=np.float64))
    table = _mass_attenuation_cached(material, tuple(float(e) for e in energies.ravel()))
    return table.reshape(np.shape(energies_kev)) if np.ndim(energies_kev) else table[0]


def attenuation_table(spectrum: Spectrum, materials: Sequence[str]) -> np.ndarray:
    """mu/rho of each material on the spectrum's energy grid, shape (E, M), cm^2/g."""
    return np.stack([mass_attenuation(m, spectrum.energies_kev) for m in materials], axis=1)


def polyenergetic_intensity(line_integrals: torch.Tensor | np.ndarray, *, kvp: float,
                            materials: Sequence[str] = ("soft_tissue", "bone"),
                            spectrum: Spectrum | None = None, al_filter_mm: float = AL_FILTER_MM) -> torch.Tensor:
    """Flat-field-corrected detected intensity I/I0 in (0, 1] for an energy-integrating detector.

    ``line_integrals``: (M, ...) areal densities (g/cm^2), one channel per name in ``materials``.
    Returns float32 (...) (the material axis is consumed). ``spectrum`` overrides the tube of ``kvp``
    with ``al_filter_mm`` of aluminium filtration.
    """
    lines = torch.as_tensor(line_integrals)
    if lines.shape[0] != len(materials):
        raise ValueError(f"line_integrals has {lines.shape[0]} channels but {len(materials)} materials given")
    spec = spectrum or tube_spectrum(float(kvp), al_filter_mm=float(al_filter_mm))
    mu = torch.as_tensor(attenuation_table(spec, materials), dtype=torch.float64)  # (E, M)
    weights = torch.as_tensor(spec.detector_weights, dtype=torch.float64)  # (E,)
    flat = lines.reshape(lines.shape[0], -1).to(torch.float64)  # (M, P)
    # Chunk over pixels so the (E, P) exponent stays small for large detectors.
    out = torch.empty(flat.shape[1], dtype=torch.float64)
    for start in range(0, flat.shape[1], 65536):
        exponent = mu @ flat[:, start:start + 65536]  # (E, p)
        out[start:start + 65536] = weights @ torch.exp(-exponent)
    return out.reshape(lines.shape[1:]).to(torch.float32)


def log_image(intensity: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Log image l = -ln(I/I0) (dimensionless, >= 0); I is floored at 1e-12 to stay finite."""
    return -torch.log(torch.clamp(torch.as_tensor(intensity, dtype=torch.float32), min=1e-12))


def _slab_log(kvp: float, soft_g_cm2: float, bone_g_cm2: float, al_filter_mm: float = AL_FILTER_MM) -> float:
    lines = torch.tensor([[soft_g_cm2], [bone_g_cm2]], dtype=torch.float64)
    return float(log_image(polyenergetic_intensity(lines, kvp=kvp, al_filter_mm=al_filter_mm))[0])


def effective_mass_attenuation(material: str, kvp: float, *,
                               background_soft_tissue_g_cm2: float = REFERENCE_SOFT_TISSUE_G_CM2,
                               insert_g_cm2: float = REFERENCE_INSERT_G_CM2,
                               al_filter_mm: float = AL_FILTER_MM) -> float:
    """Spectrum-weighted effective mu/rho (cm^2/g) of ``material`` at ``kvp``.

    Beam hardening makes the polyenergetic log signal non-linear in thickness, so "effective" needs a
    reference: the secant slope ``[l(background + insert) - l(background)] / insert`` for an insert of
    ``insert_g_cm2`` of the material behind ``background_soft_tissue_g_cm2`` of soft tissue. With a
    thin insert this tends to the spectrum-weighted mean of mu/rho over the hardened beam. The tube has
    ``al_filter_mm`` of aluminium filtration.
    """
    if insert_g_cm2 <= 0:
        raise ValueError("insert_g_cm2 must be > 0")
    soft, bone = background_soft_tissue_g_cm2, 0.0
    base = _slab_log(kvp, soft, bone, al_filter_mm)
    if material == "bone":
        bone += insert_g_cm2
    elif material == "soft_tissue":
        soft += insert_g_cm2
    else:
        raise KeyError(f"effective attenuation is defined for 'soft_tissue' and 'bone', not {material!r}")
    return (_slab_log(kvp, soft, bone, al_filter_mm) - base) / insert_g_cm2


@lru_cache(maxsize=128)
def cancellation_weight(cancel: str, *, kvp_low: float = DE_LOW_KVP, kvp_high: float = DE_HIGH_KVP,
                        background_soft_tissue_g_cm2: float = REFERENCE_SOFT_TISSUE_G_CM2,
                        insert_g_cm2: float = REFERENCE_INSERT_G_CM2, al_filter_mm: float = AL_FILTER_MM) -> float:
    """Weight w = mu_eff(high) / mu_eff(low) of the material to ``cancel`` ('bone' or 'soft_tissue').

    ``l_high - w * l_low`` then has no contrast from that material (exactly so for the reference
    insert behind the reference background; see :func:`effective_mass_attenuation`). Both tubes have
    ``al_filter_mm`` of aluminium filtration.
    """
    opts = {"background_soft_tissue_g_cm2": background_soft_tissue_g_cm2, "insert_g_cm2": insert_g_cm2,
            "al_filter_mm": al_filter_mm}
    return (effective_mass_attenuation(cancel, kvp_high, **opts)
            / effective_mass_attenuation(cancel, kvp_low, **opts))


def dual_energy_subtraction(log_low: torch.Tensor, log_high: torch.Tensor, *, kvp_low: float = DE_LOW_KVP,
                            kvp_high: float = DE_HIGH_KVP,
                            background_soft_tissue_g_cm2: float = REFERENCE_SOFT_TISSUE_G_CM2,
                            insert_g_cm2: float = REFERENCE_INSERT_G_CM2,
                            al_filter_mm: float = AL_FILTER_MM) -> dict[str, torch.Tensor]:
    """Weighted log subtraction of a low/high-kVp pair of log images (any equal shapes), the weights
    those of tubes with ``al_filter_mm`` of aluminium filtration.

    Returns ``{"de_soft": (l_H - w_b l_L)/(1 - w_b/w_s), "de_bone": (l_H - w_s l_L)/(1 - w_s/w_b)}``:
    the bone-cancelled soft-tissue image and the tissue-cancelled bone image, both in units of the
    high-kVp log image (so ``de_soft + de_bone ~ log_high``).
    """
    opts = {"kvp_low": kvp_low, "kvp_high": kvp_high, "insert_g_cm2": insert_g_cm2,
            "background_soft_tissue_g_cm2": background_soft_tissue_g_cm2, "al_filter_mm": al_filter_mm}
    w_b = cancellation_weight("bone", **opts)
    w_s = cancellation_weight("soft_tissue", **opts)
    log_low = torch.as_tensor(log_low, dtype=torch.float32)
    log_high = torch.as_tensor(log_high, dtype=torch.float32)
    return {
        "de_soft": (log_high - w_b * log_low) / (1.0 - w_b / w_s),
        "de_bone": (log_high - w_s * log_low) / (1.0 - w_s / w_b),
    }


def xray_images(line_integrals: torch.Tensor | np.ndarray, *, kvp_se: float = SE_KVP,
                kvp_low: float = DE_LOW_KVP, kvp_high: float = DE_HIGH_KVP,
                materials: Sequence[str] = ("soft_tissue", "bone"),
                background_soft_tissue_g_cm2: float = REFERENCE_SOFT_TISSUE_G_CM2,
                insert_g_cm2: float = REFERENCE_INSERT_G_CM2, al_filter_mm: float = AL_FILTER_MM,
                ) -> dict[str, torch.Tensor]:
    """Single- and dual-energy log images from material line integrals (tubes with ``al_filter_mm`` of
    aluminium filtration).

    ``line_integrals``: (M, H, W) g/cm^2. Returns float32 (H, W) images (dimensionless log units):
    ``se`` = -ln(I/I0) at ``kvp_se``; ``de_soft`` and ``de_bone`` from :func:`dual_energy_subtraction`
    of the ``kvp_low``/``kvp_high`` pair (weights for the given reference background and insert);
    also ``low`` and ``high`` (the two log images).
    """
    def log_at(kvp: float) -> torch.Tensor:
        return log_image(polyenergetic_intensity(line_integrals, kvp=kvp, materials=materials,
                                                 al_filter_mm=al_filter_mm))

    low, high = log_at(kvp_low), log_at(kvp_high)
    se = high if kvp_se == kvp_high else log_at(kvp_se)
    de = dual_energy_subtraction(low, high, kvp_low=kvp_low, kvp_high=kvp_high, insert_g_cm2=insert_g_cm2,
                                 background_soft_tissue_g_cm2=background_soft_tissue_g_cm2, al_filter_mm=al_filter_mm)
    return {"se": se, "low": low, "high": high, **de}


def describe_physics(*, kvp_se: float = SE_KVP, kvp_low: float = DE_LOW_KVP,
                     kvp_high: float = DE_HIGH_KVP) -> Mapping[str, float]:
    """Numbers worth recording next to a dataset: mean energies and the DE weights."""
    return {
        "kvp_se": kvp_se, "kvp_low": kvp_low, "kvp_high": kvp_high,
        "mean_energy_se_kev": tube_spectrum(kvp_se).mean_energy_kev,
        "mean_energy_low_kev": tube_spectrum(kvp_low).mean_energy_kev,
        "mean_energy_high_kev": tube_spectrum(kvp_high).mean_energy_kev,
        "w_bone_cancel": cancellation_weight("bone", kvp_low=kvp_low, kvp_high=kvp_high),
        "w_soft_cancel": cancellation_weight("soft_tissue", kvp_low=kvp_low, kvp_high=kvp_high),
        "reference_soft_tissue_g_cm2": REFERENCE_SOFT_TISSUE_G_CM2,
        "reference_insert_g_cm2": REFERENCE_INSERT_G_CM2,
    }


__all__: Sequence[str] = [
    "MATERIALS", "Spectrum", "tube_spectrum", "mass_attenuation", "attenuation_table",
    "polyenergetic_intensity", "log_image", "effective_mass_attenuation", "cancellation_weight",
    "dual_energy_subtraction", "xray_images", "describe_physics",
    "SE_KVP", "DE_LOW_KVP", "DE_HIGH_KVP",
]
