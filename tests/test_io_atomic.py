"""Atomic writes: nothing half-written under the final name, nothing replaced unless asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.io.atomic import atomic_write


def test_atomic_write_failure_leaves_nothing_and_keeps_existing(tmp_path: Path) -> None:
    def failing_write(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")

    new = tmp_path / "new.nii.gz"
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(new, failing_write)
    assert list(tmp_path.iterdir()) == []

    existing = tmp_path / "old.mha"
    existing.write_bytes(b"original")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(existing, failing_write, overwrite=True)
    assert existing.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["old.mha"]


def test_atomic_write_temp_file_keeps_the_format_suffix(tmp_path: Path) -> None:
    seen = []
    atomic_write(tmp_path / "sct.nii.gz", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"x")))
    assert seen[0].parent == tmp_path and seen[0].name.endswith(".nii.gz") and seen[0].name.startswith(".")
    assert (tmp_path / "sct.nii.gz").read_bytes() == b"x"
