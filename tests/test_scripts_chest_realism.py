"""scripts.chest_realism: masks and path statistics on a tiny phantom (the real-CT figure runs for a minute)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.phantoms.chest import make_chest_subject
from scripts.chest_realism import masks_of, path_statistics, project_ap


def test_masks_and_statistics_of_a_tiny_phantom():
    subject = make_chest_subject(seed=1, size=(50, 40, 45), contrast="none")
    body, lung = masks_of(subject.ct)
    assert lung.any() and np.all(body[lung]) and not body[0, -1, :].any()  # lungs inside the body, air in front
    lines = project_ap(subject.ct, subject.affine, size=32)
    assert lines.shape == (3, 32, 32) and lines[2].max() > 10.0  # > 10 cm of lung along the central rays
    stats = path_statistics(lines)
    assert set(stats) == {"bone (body)", "bone (lung fields)", "soft (lung fields)", "share behind bone"}
    assert all(np.all(np.diff(v) >= 0) for k, v in stats.items() if k != "share behind bone")  # percentiles
    assert 0.0 < stats["share behind bone"][0] < 1.0
    with pytest.raises(ValueError, match="no lung field"):
        path_statistics(np.zeros((3, 4, 4)))


def test_a_labelled_ct_gets_its_iodine_share_and_a_column_without_contrast(tmp_path, capsys):
    from pipeline.io.volumes import read_volume
    from scripts.chest_realism import iodine_share, main, real_skeleton
    from tests.phantom_fixtures import labelled_chest_ct

    ct = labelled_chest_ct(tmp_path / "CXR001") / "ct.nii.gz"
    skeleton = real_skeleton(ct)
    assert skeleton.any()
    hu, affine = read_volume(ct)
    share = iodine_share(hu, affine, skeleton, size=32)
    assert 0.0 < share < 1.0  # an arterial phantom: iodine outside the labelled skeleton
    assert main(["--real-ct", str(ct), "--n", "0", "--size", "32", "--figure", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert "| real CT, contrast removed |" in out and (tmp_path / "f.png").is_file()
    assert f"{share:.0%} lies outside its segmented skeleton" in out
    (tmp_path / "CXR001" / "mask.nii.gz").unlink()
    assert real_skeleton(ct) is None
    assert main(["--real-ct", str(ct), "--n", "0", "--size", "32", "--figure", str(tmp_path / "g.png")]) == 0
    assert "outside its segmented skeleton" not in capsys.readouterr().out
