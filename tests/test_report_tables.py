"""Tests for pipeline.report.tables: the long results table (column order, empty ids, float values),
the summary (mean and ddof=1 SD computed by hand, ``n`` counting finite values only, NaN SD for one
case, first-seen order), its Markdown rendering, ``summary_value`` and ``write_tables`` (three files,
atomic, refusing to overwrite unless asked, leaving existing files untouched).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.report.tables import (
    RESULT_COLUMNS,
    SUMMARY_COLUMNS,
    TABLE_FILES,
    results_frame,
    summarise,
    summary_markdown,
    summary_value,
    table_paths,
    write_tables,
)


def rows():
    """Two methods, two regions, two metrics; the second method misses ``me`` in the bone region."""
    out = []
    mae = {"s1": 10.0, "s2": 20.0, "s3": 40.0}
    for subject, value in mae.items():
        unet = {"method": "unet", "subject_id": subject}
        out.append({**unet, "region": "body", "metric": "mae", "value": value})
        out.append({**unet, "region": "body", "metric": "me", "value": value / 10 - 2})
        out.append({**unet, "region": "soft_tissue", "metric": "mae", "value": value / 2})
    out.append({"method": "bulk", "subject_id": "s1", "region": "body", "metric": "mae", "value": 100.0})
    out.append({"method": "bulk", "subject_id": "s2", "region": "body", "metric": "mae", "value": float("nan")})
    out.append({"method": "bulk", "subject_id": "s1", "region": "body", "metric": "me", "value": 5.0})
    out.append({"method": "bulk", "subject_id": "s2", "region": "body", "metric": "me", "value": -1.0})
    return out


def hand_mean_sd(values):
    """Mean and sample SD (n - 1 in the denominator) written out."""
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


# ---------------------------------------------------------------------------------------------------- results_frame


def test_results_frame_orders_columns_and_fills_missing_ids():
    frame = results_frame([
        {"value": 3, "metric": "mae", "method": "m", "subject_id": "s1"},  # no image_id, no region
        {"method": "m", "metric": "ssim", "value": "0.5", "subject_id": "s1", "image_id": "p001", "region": "image",
         "extra": "dropped"},
        {"method": "m", "metric": "mae", "value": 1.5, "subject_id": None, "image_id": float("nan"), "region": "body"},
    ])
    assert tuple(frame.columns) == RESULT_COLUMNS
    assert frame["image_id"].tolist() == ["", "p001", ""]
    assert frame["region"].tolist() == ["", "image", "body"]
    assert frame["subject_id"].tolist() == ["s1", "s1", ""]
    assert frame["value"].dtype == np.float64 and frame["value"].tolist() == [3.0, 0.5, 1.5]


def test_results_frame_needs_method_metric_and_value():
    for missing in ("method", "metric", "value"):
        row = {"method": "m", "metric": "mae", "value": 1.0}
        row.pop(missing)
        with pytest.raises(ValueError, match=f"'{missing}'"):
            results_frame([row])
    empty = results_frame([])
    assert tuple(empty.columns) == RESULT_COLUMNS and len(empty) == 0


def test_results_frame_rejects_a_value_measured_twice():
    row = {"method": "m", "subject_id": "s1", "region": "body", "metric": "mae", "value": 1.0}
    with pytest.raises(ValueError, match=r"measured twice.*'m'.*'s1'.*'body'.*'mae'"):
        results_frame([row, {**row, "value": 2.0}])
    # the same measurement on another image, region or metric is a different row
    frame = results_frame([row, {**row, "image_id": "p1"}, {**row, "region": "bone"}, {**row, "metric": "me"}])
    assert len(frame) == 4


# ---------------------------------------------------------------------------------------------------- summarise


def test_summarise_mean_sd_and_counts_by_hand():
    summary = summarise(results_frame(rows()))
    assert tuple(summary.columns) == SUMMARY_COLUMNS
    keys = list(zip(summary["method"], summary["region"], summary["metric"]))
    assert keys == [("unet", "body", "mae"), ("unet", "body", "me"), ("unet", "soft_tissue", "mae"),
                    ("bulk", "body", "mae"), ("bulk", "body", "me")]  # first-seen order
    by_key = summary.set_index(["method", "region", "metric"])
    expected = {
        ("unet", "body", "mae"): (3, *hand_mean_sd([10.0, 20.0, 40.0])),
        ("unet", "body", "me"): (3, *hand_mean_sd([-1.0, 0.0, 2.0])),
        ("unet", "soft_tissue", "mae"): (3, *hand_mean_sd([5.0, 10.0, 20.0])),
        ("bulk", "body", "me"): (2, *hand_mean_sd([5.0, -1.0])),
    }
    for key, (n, mean, sd) in expected.items():
        row = by_key.loc[key]
        assert row["n"] == n and row["mean"] == pytest.approx(mean) and row["sd"] == pytest.approx(sd), key
    assert by_key.loc[("unet", "body", "mae"), "sd"] == pytest.approx(math.sqrt(700.0 / 3.0))  # sqrt(1400 / 2)
    # the NaN (an empty region) is no case: n = 1, mean of the one value, SD undefined
    single = by_key.loc[("bulk", "body", "mae")]
    assert single["n"] == 1 and single["mean"] == 100.0 and math.isnan(single["sd"])


def test_summarise_all_nan_group_and_infinite_values():
    frame = results_frame([{"method": "m", "subject_id": s, "metric": "psnr", "region": "r", "value": v}
                           for s, v in (("s1", float("inf")), ("s2", 30.0), ("s3", 34.0))] +
                          [{"method": "m", "subject_id": "s1", "metric": "mae", "region": "r", "value": float("nan")}])
    summary = summarise(frame).set_index("metric")
    assert summary.loc["psnr", "n"] == 2 and summary.loc["psnr", "mean"] == 32.0  # inf is not finite
    assert summary.loc["psnr", "sd"] == pytest.approx(math.sqrt(8.0))
    assert summary.loc["mae", "n"] == 0
    assert math.isnan(summary.loc["mae", "mean"]) and math.isnan(summary.loc["mae", "sd"])


def test_summary_value_and_missing_entries():
    summary = summarise(results_frame(rows()))
    assert summary_value(summary, method="unet", metric="mae", region="body") == pytest.approx(70.0 / 3.0)
    sd = summary_value(summary, method="bulk", metric="me", region="body", stat="sd")
    assert sd == pytest.approx(math.sqrt(18.0))  # values 5 and -1: sqrt((9 + 9) / 1)
    assert summary_value(summary, method="unet", metric="mae", region="soft_tissue", stat="n") == 3.0
    with pytest.raises(KeyError, match="'bulk'.*'soft_tissue'.*'mae'"):
        summary_value(summary, method="bulk", metric="mae", region="soft_tissue")
    with pytest.raises(KeyError):
        summary_value(summary, method="unet", metric="ssim", region="body")


# ---------------------------------------------------------------------------------------------------- markdown


def test_summary_markdown_one_section_per_region_with_labelled_cells():
    summary = summarise(results_frame(rows()))
    text = summary_markdown(summary, title="sCT results", notes="Phantoms, 3 subjects.",
                            labels={"mae": ("MAE (HU)", 1), "me": ("ME (HU)", 2)},
                            region_titles={"body": "Whole body"})
    lines = text.splitlines()
    assert lines[:4] == ["# sCT results", "", "Phantoms, 3 subjects.", ""]
    assert [line for line in lines if line.startswith("## ")] == ["## Whole body", "## soft tissue"]
    body = lines[lines.index("## Whole body"):lines.index("## soft tissue")]
    mean, sd = hand_mean_sd([10.0, 20.0, 40.0])
    me_mean, me_sd = hand_mean_sd([-1.0, 0.0, 2.0])
    assert "| Method | n | MAE (HU) | ME (HU) |" in body
    assert f"| unet | 3 | {mean:.1f} ± {sd:.1f} | {me_mean:.2f} ± {me_sd:.2f} |" in body
    assert "| unet | 3 | 23.3 ± 15.3 | 0.33 ± 1.53 |" in body
    assert "| bulk | 1 | 100.0 | 2.00 ± 4.24 |" in body  # one case: no ± part
    soft = lines[lines.index("## soft tissue"):]
    assert "| Method | n | MAE (HU) |" in soft and "| unet | 3 | 11.7 ± 7.6 |" in soft
    assert not any(line.startswith("| bulk") for line in soft)  # bulk has nothing in that region


def test_summary_markdown_defaults_missing_cells_and_unnamed_region():
    frame = results_frame([{"method": "a", "image_id": "p1", "metric": "ssim", "value": 0.91234},
                           {"method": "a", "image_id": "p2", "metric": "ssim", "value": 0.93},
                           {"method": "b", "image_id": "p1", "metric": "psnr", "value": 30.0},
                           {"method": "a", "image_id": "p1", "metric": "psnr", "value": float("nan")}])
    text = summary_markdown(summarise(frame), title="t")
    assert "## " not in text  # region "" gets no heading
    assert "| Method | n | ssim | psnr |" in text
    assert "| a | 2 | 0.9212 ± 0.0125 | – |" in text  # 4 decimals by default; all-NaN -> dash
    (b_row,) = [line for line in text.splitlines() if line.startswith("| b |")]
    assert b_row.endswith("| – | 30.0000 |")  # no ssim for b: dash


# ---------------------------------------------------------------------------------------------------- files


def test_write_tables_writes_three_consistent_files(tmp_path):
    results = results_frame(rows())
    out = tmp_path / "eval"
    paths = write_tables(results, out, title="sCT", labels={"mae": ("MAE (HU)", 1)})
    assert TABLE_FILES == ("results.csv", "summary.csv", "summary.md")
    assert paths == {name: out / name for name in TABLE_FILES}
    assert sorted(p.name for p in out.iterdir()) == sorted(TABLE_FILES)  # no temporary files left
    back = pd.read_csv(paths["results.csv"], keep_default_na=False)
    assert tuple(back.columns) == RESULT_COLUMNS and len(back) == len(results)
    np.testing.assert_allclose(pd.to_numeric(back["value"], errors="coerce"), results["value"])
    summary = pd.read_csv(paths["summary.csv"])
    assert tuple(summary.columns) == SUMMARY_COLUMNS
    row = summary[(summary["method"] == "unet") & (summary["region"] == "body") & (summary["metric"] == "mae")]
    assert row["sd"].iloc[0] == pytest.approx(hand_mean_sd([10.0, 20.0, 40.0])[1], rel=1e-5)
    text = paths["summary.md"].read_text(encoding="utf-8")
    assert text.startswith("# sCT\n") and "| unet | 3 | 23.3 ± 15.3 |" in text


def test_write_tables_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "summary.md").write_text("old summary\n", encoding="utf-8")
    results = results_frame(rows())
    with pytest.raises(FileExistsError, match="summary.md"):
        write_tables(results, out, title="new")
    assert (out / "summary.md").read_text(encoding="utf-8") == "old summary\n"
    assert sorted(p.name for p in out.iterdir()) == ["summary.md"]  # refused before writing anything
    write_tables(results, out, title="new", overwrite=True)
    assert (out / "summary.md").read_text(encoding="utf-8").startswith("# new\n")
    assert sorted(p.name for p in out.iterdir()) == sorted(TABLE_FILES)


def test_write_tables_with_a_prefix_and_plain_rows(tmp_path):
    assert table_paths(tmp_path, prefix="dose_") == {name: tmp_path / f"dose_{name}" for name in TABLE_FILES}
    paths = write_tables(rows(), tmp_path, title="dose", prefix="dose_")  # rows are turned into the table
    assert paths == table_paths(tmp_path, prefix="dose_")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"dose_{name}" for name in TABLE_FILES)
    summary = pd.read_csv(paths["summary.csv"])
    assert summary["n"].tolist() == [3, 3, 3, 1, 2]
    write_tables(rows(), tmp_path, title="plain")  # other names: no clash with the prefixed files
    with pytest.raises(FileExistsError, match="dose_results.csv"):
        write_tables(rows(), tmp_path, title="dose", prefix="dose_")
