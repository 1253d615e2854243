"""Physics drawn per image: kVp pair, filtration, scatter, dose and detector blur, so that a model trained on
DRRs does not learn one simulated system.

:class:`PhysicsRanges` holds the documented ranges (docs/xray_physics.md, section 8); :func:`draw_physics`
draws one image's system from them (:class:`PhysicsDraw`). The single-energy image is the high-kVp
exposure of the pair (as on a DE system, where it is what the same detector shows at that kVp), and the
DE targets are the weighted log subtraction of *that* image's pair, with weights computed for its kVps
and filtration: each target is what the drawn system would produce, and ``de_soft + de_bone`` is still
its high-kVp log image. The noiseless references of the bone-leak metric are rendered with the same draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.xray.radiograph import RealismConfig

__all__ = ["PhysicsRanges", "PhysicsDraw", "draw_physics", "physics_rng"]


@dataclass(frozen=True)
class PhysicsRanges:
    """Where each image's system is drawn from. Discrete sets (kVp, filtration: the spectra are computed
    once per value and cached) are drawn uniformly; ``(lo, hi)`` ranges uniformly, the high-kVp exposure
    log-uniformly (dose spans a factor of four), the low-kVp one as a multiple of it.

    Sources (clinical chest DE radiography): low 60-80 kVp and high 110-150 kVp pairs; 2.5 mm Al is the
    regulatory minimum total filtration at these kVps, more is common; scatter-to-primary ratios of a chest
    with an anti-scatter grid ~0.3-0.6, without one up to several (capped at 1 here at l = 4); flat-panel
    PSFs of 0.1-0.4 mm; detective quantum efficiencies ~0.5-0.75 at low frequency.
    """

    kvp_low: tuple[float, ...] = (60.0, 70.0, 80.0)
    kvp_high: tuple[float, ...] = (110.0, 120.0, 130.0)
    al_filter_mm: tuple[float, ...] = (2.5, 3.5, 4.5)
    spr: tuple[float, float] = (0.25, 1.0)
    scatter_sigma_mm: tuple[float, float] = (30.0, 80.0)
    mas_high: tuple[float, float] = (1.0, 4.0)
    mas_low_ratio: tuple[float, float] = (3.0, 7.0)
    psf_sigma_mm: tuple[float, float] = (0.1, 0.4)
    quantum_efficiency: tuple[float, float] = (0.5, 0.75)
    scatter_in_de: bool = False

    def __post_init__(self) -> None:
        if min(self.kvp_high) <= max(self.kvp_low) + 20:
            raise ValueError(f"every high kVp {self.kvp_high} must exceed every low kVp {self.kvp_low} by > 20 kVp")
        for name in ("spr", "scatter_sigma_mm", "mas_high", "mas_low_ratio", "psf_sigma_mm", "quantum_efficiency"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (lo, hi) with 0 <= lo <= hi, got {(lo, hi)}")


@dataclass(frozen=True)
class PhysicsDraw:
    """One image's system: kVp pair (the SE image is the high-kVp exposure), aluminium filtration and
    the realism chain's parameters."""

    kvp_low: float
    kvp_high: float
    al_filter_mm: float
    realism: RealismConfig = field(default_factory=RealismConfig)

    def as_row(self) -> dict[str, float]:
        """Manifest columns describing the draw."""
        r = self.realism
        return {"kvp_low": self.kvp_low, "kvp_high": self.kvp_high, "al_filter_mm": self.al_filter_mm,
                "spr": round(r.spr, 4), "scatter_sigma_mm": round(r.scatter_sigma_mm, 2),
                "mas_high": round(r.mas_high, 4), "mas_low": round(r.mas_low, 4),
                "psf_sigma_mm": round(r.psf_sigma_mm, 4), "quantum_efficiency": round(r.quantum_efficiency, 4)}


def physics_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index``'s draw: independent of the noise seeds and of other images."""
    return np.random.default_rng([int(seed), 0x50485953, int(index)])


def draw_physics(rng: np.random.Generator, ranges: PhysicsRanges = PhysicsRanges()) -> PhysicsDraw:
    """Draw one image's system from ``ranges``."""
    def pick(values: Sequence[float]) -> float:
        return float(values[int(rng.integers(len(values)))])

    def uniform(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(*bounds))

    kvp_low, kvp_high, al = pick(ranges.kvp_low), pick(ranges.kvp_high), pick(ranges.al_filter_mm)
    mas_high = float(np.exp(rng.uniform(*np.log(ranges.mas_high))))
    realism = RealismConfig(mas_high=mas_high, mas_low=mas_high * uniform(ranges.mas_low_ratio),
                            spr=uniform(ranges.spr), scatter_sigma_mm=uniform(ranges.scatter_sigma_mm),
                            psf_sigma_mm=uniform(ranges.psf_sigma_mm),
                            quantum_efficiency=uniform(ranges.quantum_efficiency), scatter_in_de=ranges.scatter_in_de)
    return PhysicsDraw(kvp_low=kvp_low, kvp_high=kvp_high, al_filter_mm=al, realism=realism)
