"""Evaluation figures (PNG, matplotlib Agg, no pyplot state): error slices, HU histograms, region bars.

Volumes are ``(X, Y, Z)`` in their file's voxel order with a 4x4 RAS affine; slices are shown after
reorienting to the closest canonical (RAS) orientation with nibabel, with the true voxel aspect ratio,
in neurological convention (patient's right on the image's right, anterior/superior up).
Every PNG is written atomically and an existing file is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never needs a display

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.io.atomic import atomic_write

__all__ = ["save_png", "save_image_grid", "CT_WINDOW_HU", "ERROR_RANGE_HU", "save_error_slices", "save_hu_histograms", "save_region_bars"]

CT_WINDOW_HU = (-1000.0, 1500.0)
ERROR_RANGE_HU = 500.0
_VIEWS = ("axial", "coronal", "sagittal")


def save_png(fig: Figure, out_path: str | os.PathLike, *, overwrite: bool, dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG atomically (refusing to replace a file unless ``overwrite``)."""
    return atomic_write(out_path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"), overwrite=overwrite)


def save_image_grid(rows: Sequence[Sequence[tuple[np.ndarray, str, Sequence[float]]]], path: str | os.PathLike, *,
                    overwrite: bool, panel_inches: float = 2.6) -> Path:
    """Grey-scale grid of 2-D images, one list of ``(image, title, (lo, hi))`` panels per row; written
    atomically. Used for the DRR and 2-D pair figures. A panel may carry a 4th element, a label
    image of the same shape whose regions (> 0) are outlined in red (e.g. projected tumours; None: none),
    and a 5th, a matplotlib colour map instead of grey (e.g. ``"RdBu_r"`` for a signed error)."""
    columns = max(len(row) for row in rows)
    fig = Figure(figsize=(panel_inches * columns, panel_inches * len(rows)))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(columns):
            axes[r, c].axis("off")
            if c < len(row):
                image, title, (lo, hi) = row[c][:3]
                axes[r, c].imshow(image, cmap=row[c][4] if len(row[c]) > 4 else "gray", vmin=lo, vmax=hi)
                outline = row[c][3] if len(row[c]) > 3 else None
                if outline is not None and np.any(outline):
                    axes[r, c].contour(np.asarray(outline) > 0, levels=[0.5], colors="r", linewidths=0.6)
                axes[r, c].set_title(title, fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, overwrite=overwrite, dpi=100)


def _canonical(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Volume reoriented to the closest RAS axes (flips/permutations only, no resampling) and its zooms."""
    image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(volume, dtype=np.float32), affine))
    return np.asarray(image.dataobj), np.asarray(image.header.get_zooms()[:3], dtype=float)


def _slice(volume: np.ndarray, zooms: np.ndarray, view: str, centre: np.ndarray) -> tuple[np.ndarray, float]:
    """2-D image (rows = up axis, for ``origin='lower'``) and the pixel aspect ratio for ``imshow``."""
    i, j, k = (int(c) for c in centre)
    if view == "axial":  # x right, y (anterior) up
        return volume[:, :, k].T, zooms[1] / zooms[0]
    if view == "coronal":  # x right, z (superior) up
        return volume[:, j, :].T, zooms[2] / zooms[0]
    return volume[i, :, :].T, zooms[2] / zooms[1]  # sagittal: y (anterior) right, z up


def save_error_slices(
    *,
    ct: np.ndarray,
    sct: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    out_path: str | os.PathLike,
    mr: np.ndarray | None = None,
    std: np.ndarray | None = None,
    title: str = "",
    ct_window_hu: tuple[float, float] = CT_WINDOW_HU,
    error_range_hu: float = ERROR_RANGE_HU,
    overwrite: bool = False,
) -> Path:
    """Axial/coronal/sagittal slices through the mask's centre of mass: MR | CT | sCT | sCT - CT (| std).

    CT and sCT share the HU window ``ct_window_hu``; the error map uses a diverging colormap over
    ``±error_range_hu`` HU with the body outline drawn in grey. ``mr`` is optional (column dropped).
    ``std`` (an uncertainty map in HU, e.g. flip TTA's) adds a last column, 0..``error_range_hu`` HU, so it
    reads against |error| on the same scale.
    """
    ct_c, zooms = _canonical(ct, affine)
    sct_c, _ = _canonical(sct, affine)
    mask_c, _ = _canonical((np.asarray(mask) > 0).astype(np.float32), affine)
    mr_c = _canonical(mr, affine)[0] if mr is not None else None
    body = mask_c > 0.5
    centre = np.round(np.argwhere(body).mean(axis=0)) if body.any() else np.array(ct_c.shape) // 2
    error = sct_c - ct_c

    columns: list[tuple[str, np.ndarray, dict]] = []
    if mr_c is not None:
        lo, hi = np.percentile(mr_c[body] if body.any() else mr_c, [0.5, 99.5])
        columns.append(("MR", mr_c, dict(cmap="gray", vmin=lo, vmax=hi)))
    columns += [
        ("CT (HU)", ct_c, dict(cmap="gray", vmin=ct_window_hu[0], vmax=ct_window_hu[1])),
        ("sCT (HU)", sct_c, dict(cmap="gray", vmin=ct_window_hu[0], vmax=ct_window_hu[1])),
        ("sCT − CT (HU)", error, dict(cmap="RdBu_r", vmin=-error_range_hu, vmax=error_range_hu)),
    ]
    if std is not None:
        columns.append(("uncertainty: std (HU)", _canonical(std, affine)[0], dict(cmap="magma", vmin=0.0, vmax=error_range_hu)))
    fig = Figure(figsize=(3.1 * len(columns), 8.4), layout="constrained")
    axes = fig.subplots(len(_VIEWS), len(columns), squeeze=False)
    for row, view in enumerate(_VIEWS):
        outline, aspect = _slice(mask_c, zooms, view, centre)
        for col, (name, volume, style) in enumerate(columns):
            ax = axes[row, col]
            image, aspect = _slice(volume, zooms, view, centre)
            shown = ax.imshow(image, origin="lower", aspect=aspect, interpolation="nearest", **style)
            if name.startswith("sCT −"):
                ax.contour(outline, levels=[0.5], colors="0.5", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=10)
            if col == 0:
                ax.set_ylabel(view, fontsize=10)
            if name != "MR" and row == len(_VIEWS) - 1:
                fig.colorbar(shown, ax=axes[:, col], location="bottom", shrink=0.85, label="HU")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_png(fig, out_path, overwrite=overwrite)


def save_hu_histograms(
    *,
    ct: np.ndarray,
    sct: np.ndarray,
    mask: np.ndarray,
    out_path: str | os.PathLike,
    title: str = "",
    hu_range: tuple[float, float] = (-1024.0, 3000.0),
    bin_width_hu: float = 10.0,
    overwrite: bool = False,
) -> Path:
    """Histograms (log count axis) of CT and sCT HU inside ``mask > 0``, values clipped to ``hu_range``."""
    body = np.asarray(mask) > 0
    edges = np.arange(hu_range[0], hu_range[1] + bin_width_hu, bin_width_hu)
    fig = Figure(figsize=(7.0, 3.8), layout="constrained")
    ax = fig.subplots()
    for name, volume, colour in (("CT", ct, "0.2"), ("sCT", sct, "tab:red")):
        values = np.clip(np.asarray(volume)[body], hu_range[0], hu_range[1])
        ax.hist(values, bins=edges, histtype="step", color=colour, linewidth=1.2, label=name)
    ax.set_yscale("log")
    ax.set_xlim(*hu_range)
    ax.set_xlabel("HU (inside body mask)")
    ax.set_ylabel(f"voxels per {bin_width_hu:g} HU")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=11)
    return save_png(fig, out_path, overwrite=overwrite)


def save_region_bars(
    per_region: pd.DataFrame,
    *,
    out_path: str | os.PathLike,
    value: str = "mae_hu",
    title: str = "MAE per region (mean ± SD over subjects)",
    overwrite: bool = False,
) -> Path:
    """Grouped bars: ``value`` (HU) per region (groups, in first-seen order) and method (bars), mean over
    subjects with SD error bars. ``per_region`` has columns ``method``, ``region`` and ``value``."""
    stats = per_region.groupby(["region", "method"], sort=False)[value].agg(["mean", "std"])
    regions = list(dict.fromkeys(per_region["region"]))
    methods = list(dict.fromkeys(per_region["method"]))
    width = 0.8 / max(len(methods), 1)
    fig = Figure(figsize=(max(6.0, 1.2 * len(regions) * max(1, len(methods)) * 0.6 + 2), 4.0), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(regions))
    for n, method in enumerate(methods):
        means = [stats["mean"].get((r, method), np.nan) for r in regions]
        sds = [stats["std"].get((r, method), np.nan) for r in regions]
        ax.bar(x + (n - (len(methods) - 1) / 2) * width, means, width, yerr=np.nan_to_num(sds), capsize=2, label=method)
    ax.set_xticks(x, [r.replace("_", " ") for r in regions])
    ax.set_ylabel(f"{value.replace('_hu', '').upper()} (HU)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title, fontsize=11)
    return save_png(fig, out_path, overwrite=overwrite)
