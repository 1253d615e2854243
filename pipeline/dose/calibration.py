"""CT number (HU) to relative stopping power (RSP) and relative electron density (RED) curves.

The default curve is the generic HU look-up table of matRad, as shipped in pyRadPlan 0.5.0
(``pyRadPlan.ct.default_hlut``; matRad's ``matRad_default.hlut``). pyRadPlan's photon (SVD pencil
beam) and proton (Hong pencil beam) engines both use that single table to turn HU into
water-equivalent (radiological) depth, so using it here keeps the WEPL/range analysis of
:mod:`pipeline.dose.wepl` consistent with the dose engines; :func:`pipeline.dose.plans` passes the same
table to the engines explicitly (``prop_dose_calc["hlut"]``). matRad uses one table for photons and
particles, so :func:`hu_to_red` uses it as the HU -> relative electron density curve too: an
approximation (a scanner-specific stoichiometric calibration, Schneider et al. 1996, Phys. Med. Biol.
41:111, separates the two) that is fine for comparing two volumes through the same curve.

Units: HU in, dimensionless ratio to water out. Values between nodes are linearly interpolated, values
outside the table are clamped to the end nodes (as ``numpy.interp``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["Calibration", "MATRAD_GENERIC", "hu_to_red", "hu_to_rsp", "load_calibration"]


@dataclass(frozen=True)
class Calibration:
    """Piecewise-linear HU -> ratio-to-water curve.

    Attributes:
        hu: node CT numbers (HU), strictly increasing.
        value: ratio to water at each node (RSP or RED), non-negative.
        source: where the numbers come from (free text, shown in reports).
    """

    hu: tuple[float, ...]
    value: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        hu, value = np.asarray(self.hu, float), np.asarray(self.value, float)
        if hu.ndim != 1 or hu.shape != value.shape or hu.size < 2:
            raise ValueError("calibration needs two equally long 1-D node lists with at least 2 nodes")
        if np.any(np.diff(hu) <= 0):
            raise ValueError("calibration HU nodes must be strictly increasing")
        if np.any(value < 0) or not np.all(np.isfinite(value)):
            raise ValueError("calibration values must be finite and >= 0")

    def as_table(self) -> np.ndarray:
        """``(N, 2)`` float array ``[HU, value]`` (pyRadPlan's ``hlut`` layout)."""
        return np.stack([np.asarray(self.hu, float), np.asarray(self.value, float)], axis=1)

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        """Ratio to water (float32, same shape as ``hu``) for CT numbers ``hu`` (HU)."""
        return np.interp(np.asarray(hu, dtype=np.float64), self.hu, self.value).astype(np.float32)

    def slope(self, hu: float) -> float:
        """d(value)/d(HU) (1/HU) on the linear segment containing ``hu``."""
        nodes = np.asarray(self.hu, float)
        i = int(np.clip(np.searchsorted(nodes, hu, side="right") - 1, 0, nodes.size - 2))
        return float((self.value[i + 1] - self.value[i]) / (nodes[i + 1] - nodes[i]))


#: matRad / pyRadPlan 0.5.0 generic HLUT (HU -> water-equivalent ratio), see the module docstring.
MATRAD_GENERIC = Calibration(
    hu=(-1024.0, -999.0, -90.0, -45.0, 0.0, 100.0, 350.0, 3000.0),
    value=(0.001, 0.001, 0.95, 0.99, 1.0, 1.095, 1.199, 2.505),
    source="matRad generic HLUT (pyRadPlan 0.5.0 pyRadPlan.ct.default_hlut)",
)


def hu_to_rsp(hu: np.ndarray, *, calibration: Calibration = MATRAD_GENERIC) -> np.ndarray:
    """Relative (to water) proton stopping power for CT numbers ``hu`` (HU)."""
    return calibration(hu)


def hu_to_red(hu: np.ndarray, *, calibration: Calibration = MATRAD_GENERIC) -> np.ndarray:
    """Relative (to water) electron density for CT numbers ``hu`` (HU); see the module docstring."""
    return calibration(hu)


def load_calibration(path: str | os.PathLike, *, source: str | None = None) -> Calibration:
    """Read a two-column text/CSV table ``HU, value`` (``#`` comments and a non-numeric header allowed)."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.replace(",", " ").replace(";", " ").split()
            try:
                rows.append((float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):
                if rows:
                    raise ValueError(f"{path}: cannot read calibration line {line!r}") from None
    if len(rows) < 2:
        raise ValueError(f"{path}: a calibration needs at least two 'HU, value' rows")
    rows.sort()
    return Calibration(hu=tuple(r[0] for r in rows), value=tuple(r[1] for r in rows), source=source or str(path))
