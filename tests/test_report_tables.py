"""Long-table writer: summary statistics, Markdown, atomic refusal to overwrite."""

import pandas as pd
import pytest

from pipeline.report.tables import write_tables


def _rows():
    return [{"subject": s, "method": m, "region": "target", "metric": "gamma_2mm2pct", "value": v}
            for s, m, v in [("a", "x", 90.0), ("b", "x", 100.0), ("a", "y", 80.0), ("b", "y", 70.0)]]


def test_write_tables_summary_and_markdown(tmp_path):
    paths = write_tables(_rows(), tmp_path, "dose")
    per_subject = pd.read_csv(paths["per_subject"])
    assert list(per_subject.columns) == ["subject", "method", "region", "metric", "value"] and len(per_subject) == 4
    summary = pd.read_csv(paths["summary"]).set_index("method")
    assert summary.loc["x", "mean"] == pytest.approx(95.0)
    assert summary.loc["y", "std"] == pytest.approx(7.0710678)  # ddof=1
    assert "| target | gamma_2mm2pct | 95.00 ± 7.07 | 75.00 ± 7.07 |" in paths["markdown"].read_text()


def test_refuses_to_overwrite_unless_asked(tmp_path):
    write_tables(_rows(), tmp_path, "dose")
    (tmp_path / "dose_summary.md").write_text("keep")
    with pytest.raises(FileExistsError):
        write_tables(_rows(), tmp_path, "dose")
    assert (tmp_path / "dose_summary.md").read_text() == "keep"
    write_tables(_rows(), tmp_path, "dose", overwrite=True)
    assert "gamma_2mm2pct" in (tmp_path / "dose_summary.md").read_text()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_duplicates_and_missing_columns_rejected(tmp_path):
    with pytest.raises(ValueError):
        write_tables(_rows() + _rows()[:1], tmp_path, "dose")
    with pytest.raises(ValueError):
        write_tables([{"subject": "a", "value": 1.0}], tmp_path, "dose")
