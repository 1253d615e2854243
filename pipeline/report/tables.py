"""Long-format result tables: one row per (subject, method, region, metric) with its value.

:func:`write_tables` writes ``<stem>_per_subject.csv`` (the rows), ``<stem>_summary.csv`` (mean, SD with
ddof=1 and n over subjects per method/region/metric) and ``<stem>_summary.md`` (mean ± SD, one column per
method). Every file is written atomically (temporary file in the same folder, then ``os.replace``) and
existing files are only replaced with ``overwrite=True``; the check covers all three files before any is
written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from pipeline.writers import atomic_write

__all__ = ["COLUMNS", "summarise_long", "summary_markdown", "table_paths", "write_tables"]

COLUMNS = ("subject", "method", "region", "metric", "value")


def table_paths(out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """``{"per_subject", "summary", "markdown"}`` output paths for ``stem`` in ``out_dir``."""
    out = Path(out_dir)
    return {"per_subject": out / f"{stem}_per_subject.csv", "summary": out / f"{stem}_summary.csv",
            "markdown": out / f"{stem}_summary.md"}


def _frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    missing = [c for c in COLUMNS if c not in frame.columns]
    if frame.empty or missing:
        raise ValueError(f"need a non-empty table with columns {', '.join(COLUMNS)} (missing: {missing})")
    frame = frame[list(COLUMNS)].copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="raise").astype(float)
    duplicated = frame.duplicated(subset=list(COLUMNS[:4]))
    if duplicated.any():
        raise ValueError(f"duplicate (subject, method, region, metric) rows: {frame[duplicated].head(3).values.tolist()}")
    return frame


def summarise_long(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD (ddof=1, NaN for one subject) and n of ``value`` per method/region/metric (NaNs skipped)."""
    grouped = frame.groupby(["method", "region", "metric"], sort=False)["value"]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def summary_markdown(summary: pd.DataFrame, *, title: str = "") -> str:
    """Markdown table: one row per region/metric, one column per method, cells ``mean ± SD``."""
    methods = list(dict.fromkeys(summary["method"]))
    keys = list(dict.fromkeys(zip(summary["region"], summary["metric"])))
    lookup = {(r.method, r.region, r.metric): _cell(r.mean, r.std) for r in summary.itertuples()}
    lines = [f"# {title}", ""] if title else []
    lines += ["| region | metric | " + " | ".join(methods) + " |", "|---|---|" + "---:|" * len(methods)]
    lines += [f"| {region} | {metric} | " + " | ".join(lookup.get((m, region, metric), "") for m in methods) + " |"
              for region, metric in keys]
    return "\n".join(lines) + "\n"


def write_tables(
    rows: Iterable[Mapping], out_dir: str | os.PathLike, stem: str, *, overwrite: bool = False, title: str = ""
) -> dict[str, Path]:
    """Write the per-subject CSV, summary CSV and Markdown summary of long-format ``rows``.

    Raises ``FileExistsError`` (before writing anything) if an output exists and not ``overwrite``, and
    ``ValueError`` for an empty table, missing columns or duplicate keys. Returns the paths written.
    """
    frame = _frame(rows)
    paths = table_paths(out_dir, stem)
    existing = [p for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass overwrite=True / --overwrite to replace it")
    summary = summarise_long(frame)
    atomic_write(paths["per_subject"], lambda p: frame.to_csv(p, index=False), overwrite=overwrite)
    atomic_write(paths["summary"], lambda p: summary.to_csv(p, index=False), overwrite=overwrite)
    text = summary_markdown(summary, title=title)
    atomic_write(paths["markdown"], lambda p: p.write_text(text, encoding="utf-8"), overwrite=overwrite)
    return paths
