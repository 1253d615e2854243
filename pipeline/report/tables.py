"""The one results-table format every evaluation writes (sCT volumes, X-ray images, dose).

Long format, one row per measured value::

    method, subject_id, image_id, region, metric, value

``image_id`` is empty for volumes (one case per subject); ``region`` names where the value was measured
(``body`` for whole-mask image metrics; ``air``/``soft_tissue``/``bone`` for the sCT regions; ``image``
for 2-D images; ``target``, ``high_dose``... for dose). A long table needs no schema change when a
metric or region is added, and the same summary code serves every task.

Files (:func:`write_tables`, atomic, refused up front when present unless ``overwrite``), each name after
an optional ``prefix`` (e.g. ``dose_``):

- ``results.csv``: every row above;
- ``summary.csv``: ``method, region, metric, n, mean, sd`` (sd over cases with ddof = 1; NaN for one);
- ``summary.md``: one Markdown table per region, methods as rows, metrics as columns, ``mean ± sd``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.io.atomic import atomic_write

__all__ = [
    "RESULT_COLUMNS",
    "SUMMARY_COLUMNS",
    "TABLE_FILES",
    "refuse_existing_outputs",
    "results_frame",
    "summarise",
    "summary_markdown",
    "summary_value",
    "table_paths",
    "write_tables",
]

RESULT_COLUMNS = ("method", "subject_id", "image_id", "region", "metric", "value")
SUMMARY_COLUMNS = ("method", "region", "metric", "n", "mean", "sd")
TABLE_FILES = ("results.csv", "summary.csv", "summary.md")


def results_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows (dicts with ``method``, ``metric``, ``value`` and any of the id columns) as the long table,
    columns in :data:`RESULT_COLUMNS` order; absent ids become ``""``, ``value`` is float."""
    frame = pd.DataFrame(list(rows))
    for column in ("method", "metric", "value"):
        if len(frame) and column not in frame:
            raise ValueError(f"result rows need a '{column}' entry; got columns {list(frame.columns)}")
    frame = frame.reindex(columns=list(RESULT_COLUMNS))
    for column in ("subject_id", "image_id", "region"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
    frame["value"] = frame["value"].astype(float)
    duplicated = frame.duplicated(subset=list(RESULT_COLUMNS[:-1]))
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise ValueError(f"result rows measured twice, e.g. method {first['method']!r}, subject {first['subject_id']!r}, "
                         f"region {first['region']!r}, metric {first['metric']!r}")
    return frame


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD (ddof = 1) over cases per ``(method, region, metric)``, in first-seen order.

    ``n`` counts finite values (an empty region's NaN is not a case)."""
    rows = []
    for (method, region, metric), group in results.groupby(["method", "region", "metric"], sort=False):
        values = group["value"].astype(float)
        values = values[np.isfinite(values)]
        rows.append({"method": method, "region": region, "metric": metric, "n": int(values.size),
                     "mean": float(values.mean()) if values.size else float("nan"),
                     "sd": float(values.std(ddof=1)) if values.size > 1 else float("nan")})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def summary_value(summary: pd.DataFrame, *, method: str, metric: str, region: str, stat: str = "mean") -> float:
    """One number of a summary table (``stat`` is ``mean``, ``sd`` or ``n``); KeyError when absent."""
    hit = summary[(summary["method"] == method) & (summary["metric"] == metric) & (summary["region"] == region)]
    if hit.empty:
        raise KeyError(f"no summary value for method {method!r}, region {region!r}, metric {metric!r}")
    return float(hit[stat].iloc[0])


def _cell(mean: float, sd: float, decimals: int) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{decimals}f}" + (f" ± {sd:.{decimals}f}" if np.isfinite(sd) else "")


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "--:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(summary: pd.DataFrame, *, title: str, notes: str = "",
                     labels: Mapping[str, tuple[str, int]] | None = None,
                     region_titles: Mapping[str, str] | None = None) -> str:
    """Markdown: ``# title``, ``notes``, then per region (first-seen order) a table of methods x metrics.

    ``labels`` maps a metric to ``(column header, decimals)``; others show their name with 4 significant
    decimals. ``region_titles`` maps a region to its heading (default: the region name).
    """
    labels, region_titles = dict(labels or {}), dict(region_titles or {})
    parts = [f"# {title}", ""] + ([notes, ""] if notes else [])
    for region in dict.fromkeys(summary["region"]):
        block = summary[summary["region"] == region]
        metrics = list(dict.fromkeys(block["metric"]))
        methods = list(dict.fromkeys(block["method"]))
        stats = block.set_index(["method", "metric"])
        header = ["Method", "n"] + [labels.get(m, (m, 4))[0] for m in metrics]
        rows = []
        for method in methods:
            n = int(stats.loc[(method, metrics[0]), "n"]) if (method, metrics[0]) in stats.index else 0
            cells = [_cell(stats.loc[(method, m), "mean"], stats.loc[(method, m), "sd"], labels.get(m, (m, 4))[1])
                     if (method, m) in stats.index else "–" for m in metrics]
            rows.append([str(method), str(n), *cells])
        if region:
            parts += [f"## {region_titles.get(region, region.replace('_', ' '))}", ""]
        parts += [_markdown_table(header, rows), ""]
    return "\n".join(parts)


def table_paths(out_dir: str | os.PathLike, *, prefix: str = "") -> dict[str, Path]:
    """``{file name: path}`` of the :data:`TABLE_FILES` in ``out_dir``, each name after ``prefix``."""
    return {name: Path(out_dir) / f"{prefix}{name}" for name in TABLE_FILES}


def refuse_existing_outputs(paths: Iterable[Path], *, overwrite: bool) -> None:
    """``FileExistsError`` naming the first existing path (and how many exist), before any work is done."""
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists ({len(existing)} output file(s) already in "
                              f"{existing[0].parent}); pass overwrite=True (--overwrite true) to replace them")


def write_tables(results: pd.DataFrame, out_dir: str | os.PathLike, *, title: str, notes: str = "",
                 labels: Mapping[str, tuple[str, int]] | None = None,
                 region_titles: Mapping[str, str] | None = None, prefix: str = "",
                 overwrite: bool = False) -> dict[str, Path]:
    """Write ``results.csv``, ``summary.csv`` and ``summary.md`` (:data:`TABLE_FILES`, after ``prefix``)
    into ``out_dir``; returns ``{file name: path}`` keyed by the unprefixed names. ``results`` is a
    :func:`results_frame` (or rows for it)."""
    if not isinstance(results, pd.DataFrame):
        results = results_frame(results)
    paths = table_paths(out_dir, prefix=prefix)
    refuse_existing_outputs(paths.values(), overwrite=overwrite)
    summary = summarise(results)
    text = summary_markdown(summary, title=title, notes=notes, labels=labels, region_titles=region_titles)
    atomic_write(paths["results.csv"], lambda tmp: results.to_csv(tmp, index=False, float_format="%.6g"),
                 overwrite=overwrite)
    atomic_write(paths["summary.csv"], lambda tmp: summary.to_csv(tmp, index=False, float_format="%.6g"),
                 overwrite=overwrite)
    atomic_write(paths["summary.md"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=overwrite)
    return paths
