"""Reference sCT methods that need no network, to put a model's metrics in context.

- :func:`bulk_density`: water (0 HU) inside the body, air (-1000 HU) outside: the classic MR-only
  fallback ("bulk density override") and the floor any learned method must beat.
- :class:`TissueLookup`: per-subject normalised MR intensity (``transforms.intensity.normalize_mr``,
  [-1, 1]) binned into K bins, each bin mapped to the median HU of the training CT voxels that fell in
  it. It captures what intensity alone can say (fat vs water vs dark), and shows the core MR ambiguity:
  air and cortical bone share the darkest bin.

Arrays are ``(X, Y, Z)`` in the MR file's own voxel order; predictions are HU (float32), -1000 HU
outside ``mask > 0``. :func:`write_baseline_predictions` writes them as int16 NIfTI on the MR's grid.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pipeline.io.volumes import read_volumes_on_one_grid, write_like_reference
from transforms.intensity import HU_AIR, normalize_mr

__all__ = [
    "BASELINE_NAMES",
    "TissueLookup",
    "bulk_density",
    "fit_tissue_lookup",
    "write_baseline_predictions",
]

BASELINE_NAMES = ("bulk_density", "tissue_lookup")
HU_WATER = 0.0
# Integer-HU histogram range used to fit the lookup; covers int16 CT as scanners store it.
_HIST_HU_MIN, _HIST_HU_MAX = -1024, 3071


def _check_mr_mask(mr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if np.shape(mr) != np.shape(mask):
        raise ValueError(f"MR shape {np.shape(mr)} differs from mask shape {np.shape(mask)}")
    body = np.asarray(mask) > 0
    if not body.any():
        raise ValueError("mask is empty (no voxel > 0)")
    if not np.all(np.isfinite(mr)):
        raise ValueError("MR contains NaN/inf voxels")
    return body


def bulk_density(mr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Bulk-density sCT ``(X, Y, Z)`` float32 HU: 0 HU where ``mask > 0``, -1000 HU elsewhere.

    ``mr`` only fixes the grid (shape); its intensities are not used.
    """
    body = _check_mr_mask(mr, mask)
    return np.where(body, np.float32(HU_WATER), np.float32(HU_AIR)).astype(np.float32)


@dataclass
class TissueLookup:
    """Normalised-MR-bin -> HU lookup table.

    Attributes:
        bin_edges: ``(K + 1,)`` edges over the normalised MR range [-1, 1] (values are clipped into it,
            the last bin is closed).
        median_hu: ``(K,)`` median training CT (HU) per bin; bins that saw no training voxel take the
            value of the nearest filled bin.
        n_voxels: ``(K,)`` training voxels per bin (0 marks a filled-in bin).
        upper_percentile: passed to ``normalize_mr`` (the MR value mapped to +1).
    """

    bin_edges: np.ndarray
    median_hu: np.ndarray
    n_voxels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    upper_percentile: float = 99.5

    @property
    def n_bins(self) -> int:
        return int(len(self.bin_edges) - 1)

    def _bin_index(self, mr_unit: np.ndarray) -> np.ndarray:
        # searchsorted on the inner edges: bin k holds [edge_k, edge_k+1); +1.0 falls in the last bin
        return np.searchsorted(self.bin_edges[1:-1], mr_unit, side="right")

    @classmethod
    def fit(
        cls,
        subjects: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
        *,
        n_bins: int = 16,
        upper_percentile: float = 99.5,
    ) -> "TissueLookup":
        """Fit on ``(mr, ct_hu, mask)`` triples (each ``(X, Y, Z)``, voxels with ``mask > 0``).

        ``subjects`` may be a generator, so volumes can be loaded one at a time: per bin, an integer-HU
        histogram is accumulated instead of keeping every voxel, which gives the exact median (to 1 HU)
        in constant memory however many subjects are used.
        """
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        edges = np.linspace(-1.0, 1.0, n_bins + 1)
        lookup = cls(bin_edges=edges, median_hu=np.zeros(n_bins), upper_percentile=upper_percentile)
        n_hu = _HIST_HU_MAX - _HIST_HU_MIN + 1
        counts = np.zeros((n_bins, n_hu), dtype=np.int64)
        n_subjects = 0
        for mr, ct, mask in subjects:
            body = _check_mr_mask(mr, mask)
            if np.shape(ct) != np.shape(mr):
                raise ValueError(f"CT shape {np.shape(ct)} differs from MR shape {np.shape(mr)}")
            mr_unit = normalize_mr(np.asarray(mr, dtype=np.float32), body, upper_percentile=upper_percentile)
            bins = lookup._bin_index(mr_unit[body])
            hu = np.clip(np.rint(np.asarray(ct)[body]), _HIST_HU_MIN, _HIST_HU_MAX).astype(np.int64) - _HIST_HU_MIN
            counts += np.bincount(bins * n_hu + hu, minlength=n_bins * n_hu).reshape(n_bins, n_hu)
            n_subjects += 1
        if n_subjects == 0:
            raise ValueError("TissueLookup.fit needs at least one training subject")
        n_voxels = counts.sum(axis=1)
        filled = np.flatnonzero(n_voxels)
        medians = np.full(n_bins, np.nan)
        for k in filled:
            cumulative = np.cumsum(counts[k])
            medians[k] = _HIST_HU_MIN + int(np.searchsorted(cumulative, (cumulative[-1] + 1) // 2))
        empty = np.flatnonzero(n_voxels == 0)
        if empty.size:  # nearest filled bin (ties: the lower one)
            nearest = filled[np.abs(filled[None, :] - empty[:, None]).argmin(axis=1)]
            medians[empty] = medians[nearest]
        lookup.median_hu, lookup.n_voxels = medians, n_voxels
        return lookup

    def predict(self, mr: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """sCT ``(X, Y, Z)`` float32 HU for ``mr`` (raw intensities, normalised here as in ``fit``)."""
        body = _check_mr_mask(mr, mask)
        mr_unit = normalize_mr(np.asarray(mr, dtype=np.float32), body, upper_percentile=self.upper_percentile)
        hu = np.full(body.shape, HU_AIR, dtype=np.float32)
        hu[body] = np.asarray(self.median_hu, dtype=np.float32)[self._bin_index(mr_unit[body])]
        return hu

    def to_json(self) -> str:
        """JSON text with the bin edges, medians (HU), voxel counts and the normalisation setting."""
        return json.dumps({
            "kind": "TissueLookup",
            "mr_normalisation": "transforms.intensity.normalize_mr",
            "upper_percentile": self.upper_percentile,
            "bin_edges": [float(e) for e in self.bin_edges],
            "median_hu": [float(v) for v in self.median_hu],
            "n_voxels": [int(n) for n in self.n_voxels],
        }, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TissueLookup":
        data = json.loads(text)
        if data.get("kind") != "TissueLookup":
            raise ValueError("not a TissueLookup JSON document (missing kind='TissueLookup')")
        edges, medians = np.asarray(data["bin_edges"], float), np.asarray(data["median_hu"], float)
        if edges.ndim != 1 or len(edges) != len(medians) + 1 or np.any(np.diff(edges) <= 0):
            raise ValueError("TissueLookup JSON: need increasing bin_edges with one more entry than median_hu")
        return cls(bin_edges=edges, median_hu=medians, n_voxels=np.asarray(data.get("n_voxels", []), dtype=np.int64),
                   upper_percentile=float(data.get("upper_percentile", 99.5)))


def fit_tissue_lookup(
    records: Sequence[Mapping[str, str]], *, n_bins: int = 16, upper_percentile: float = 99.5, progress: bool = True
) -> TissueLookup:
    """Fit :class:`TissueLookup` on manifest rows (``subject_id``, ``mr``, ``ct``, ``mask`` paths),
    loading one subject at a time."""
    if not records:
        raise ValueError("no training subjects to fit the tissue lookup on")

    def triples():
        for record in tqdm(records, desc="fit tissue lookup", unit="subject", disable=not progress):
            volumes, _ = read_volumes_on_one_grid(record, ("mr", "ct", "mask"))
            yield volumes["mr"], volumes["ct"], volumes["mask"]

    return TissueLookup.fit(triples(), n_bins=n_bins, upper_percentile=upper_percentile)


Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def write_baseline_predictions(
    records: Sequence[Mapping[str, str]],
    *,
    output_dir: str | os.PathLike,
    predictors: Mapping[str, Predictor],
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``output_dir/<name>/<subject_id>/sct.nii.gz`` for every predictor and subject.

    Args:
        records: rows with ``subject_id``, ``mr`` and ``mask`` paths.
        predictors: ``{name: f(mr, mask) -> HU (X, Y, Z)}``, e.g. ``{"bulk_density": bulk_density,
            "tissue_lookup": lookup.predict}``.
        overwrite: replace existing files; otherwise ``FileExistsError`` before anything is written.

    Files are int16 HU, atomically written with the MR's header (affine, qform/sform, zooms).
    Returns ``{name: output_dir/<name>}``.
    """
    output_dir = Path(output_dir)
    targets = {name: output_dir / name for name in predictors}
    if not overwrite:
        existing = [targets[n] / r["subject_id"] / "sct.nii.gz" for n in predictors for r in records]
        existing = [p for p in existing if p.exists()]
        if existing:
            raise FileExistsError(f"{existing[0]} exists ({len(existing)} baseline files in {output_dir}); "
                                  "pass overwrite=True to replace them")
    for record in tqdm(records, desc="baselines", unit="subject", disable=not progress):
        volumes, _ = read_volumes_on_one_grid(record, ("mr", "mask"))
        mr, mask = volumes["mr"], volumes["mask"]
        for name, predict in predictors.items():
            out = targets[name] / record["subject_id"] / "sct.nii.gz"
            write_like_reference(predict(mr, mask), reference_path=record["mr"], out_path=out,
                                 dtype=np.int16, overwrite=overwrite)
    return targets
