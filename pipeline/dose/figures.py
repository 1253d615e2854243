"""Dose figures (PNG, matplotlib Agg, written atomically): DVHs and a CT dose | sCT dose | difference | gamma
slice panel.

Dose arrays are ``(i, j, k)`` in the LPS voxel order of :func:`pipeline.dose.plans.to_lps`; axial slices
are shown with anterior up and the patient's right on the image's right (as :mod:`pipeline.report.figures`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pipeline.dose.compare import dvh_curve
from pipeline.report.figures import save_png

__all__ = ["save_dose_slices", "save_dvh"]


def save_dvh(
    *, reference: np.ndarray, evaluated: np.ndarray, structures: Mapping[str, np.ndarray], prescription_gy: float,
    out_path: str | os.PathLike, title: str = "", labels: tuple[str, str] = ("CT", "sCT"), overwrite: bool = False,
) -> Path:
    """Cumulative DVHs (Gy, % volume) of reference (solid) and evaluated (dashed) dose per structure."""
    top = 1.15 * max(float(np.max(reference)), float(np.max(evaluated)), prescription_gy)
    bins = np.linspace(0.0, top, 300)
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    for index, (name, mask) in enumerate(structures.items()):
        colour = f"C{index}"
        ax.plot(bins, dvh_curve(reference, mask, bins_gy=bins), color=colour, label=f"{name} ({labels[0]})")
        ax.plot(bins, dvh_curve(evaluated, mask, bins_gy=bins), color=colour, linestyle="--",
                label=f"{name} ({labels[1]})")
    ax.axvline(prescription_gy, color="0.6", linewidth=0.8)
    ax.set(xlabel="dose (Gy)", ylabel="volume (%)", xlim=(0, top), ylim=(0, 102), title=title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, out_path, overwrite=overwrite)


def _axial(volume: np.ndarray, k: int) -> np.ndarray:
    """Axial slice for imshow: rows anterior (top) to posterior; ``i`` runs to the patient's Left, so it is
    reversed to put the patient's left on the image's left and right on the right."""
    return np.asarray(volume)[::-1, :, k].T


def save_dose_slices(
    *, reference: np.ndarray, evaluated: np.ndarray, gamma: np.ndarray, spacing_mm: tuple[float, float, float],
    slice_index: int, prescription_gy: float, out_path: str | os.PathLike, title: str = "",
    gamma_label: str = "gamma", overwrite: bool = False,
) -> Path:
    """Four axial panels at dose-grid slice ``slice_index``: reference dose, evaluated dose (Gy),
    evaluated - reference (Gy, symmetric range) and the gamma map (NaN = not evaluated)."""
    k = int(np.clip(slice_index, 0, reference.shape[2] - 1))
    aspect = spacing_mm[1] / spacing_mm[0]
    vmax = 1.1 * max(float(np.max(reference)), prescription_gy)
    diff = np.asarray(evaluated, float) - np.asarray(reference, float)
    span = max(float(np.max(np.abs(diff[:, :, k]))), 0.02 * prescription_gy)
    panels = [(reference, "CT dose (Gy)", "jet", 0.0, vmax), (evaluated, "sCT dose (Gy)", "jet", 0.0, vmax),
              (diff, "sCT - CT (Gy)", "RdBu_r", -span, span), (gamma, gamma_label, "magma", 0.0, 2.0)]
    fig = Figure(figsize=(13.0, 3.8))
    for index, (volume, name, cmap, lo, hi) in enumerate(panels):
        ax = fig.add_subplot(1, 4, index + 1)
        image = ax.imshow(_axial(volume, k), cmap=cmap, vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("L  <->  R (patient)", fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, out_path, overwrite=overwrite)
