"""scripts.leak_sources: the leak of a segmented CT's views split by bone source, on a tiny labelled chest phantom
rendered as the benchmark renders the real CT; predictions made from the true images with known leaks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from scripts.chest_data import relocated, render, write_manifest
from scripts.leak_sources import SOURCES, leak_sources, main
from tests.phantom_fixtures import labelled_chest_ct


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, Path]:
    """``(manifest, segmentation folder)``: 3 views, the first two training rows, the third the test row."""
    root = tmp_path_factory.mktemp("leak")
    segmentation = labelled_chest_ct(root / "cts" / "CXR005")
    render(root / "cts", root / "drr" / "real", views=3, size=48, pitch=10.0, seed=2)
    rows = relocated(root / "drr" / "real" / "manifest.csv", root / "drr", None)
    rows["split"] = ["train", "train", "test"]
    return write_manifest([rows], root / "drr" / "real.csv"), segmentation


def _prediction(manifest: Path, folder: Path, bone_share: float) -> Path:
    """de_soft/<id>.nii.gz = the true noiseless soft image + ``bone_share`` x the true noiseless bone image."""
    table = pd.read_csv(manifest)
    row = table[table["split"] == "test"].iloc[0]
    soft = nib.load(manifest.parent / row["de_soft_noiseless"])
    bone = np.asarray(nib.load(manifest.parent / row["de_bone_noiseless"]).dataobj)
    (folder / "de_soft").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(soft.dataobj) + bone_share * bone, soft.affine),
             folder / "de_soft" / f"{row['projection_id']}.nii.gz")
    return folder


def test_a_known_share_of_the_bone_image_is_read_back_from_every_source(rendered, tmp_path):
    manifest, segmentation = rendered
    predictions = {"perfect": _prediction(manifest, tmp_path / "a", 0.0),
                   "half": _prediction(manifest, tmp_path / "b", 0.5)}
    table = leak_sources(manifest, segmentation, predictions).set_index(["region", "scale", "method"])
    assert {"lung fields", "body"} <= set(table.index.get_level_values("region"))
    for (region, scale), rows in table.groupby(level=["region", "scale"]):
        rows = rows.droplevel(["region", "scale"])
        for source in SOURCES:
            assert rows.loc["perfect", source] == pytest.approx(0.0, abs=1e-6)
            # the bone image is not exactly linear in the bone path (beam hardening): close, not equal
            assert rows.loc["half", source] == pytest.approx(0.5, abs=0.08), (region, scale, source)
        shares = rows.loc["variance share", list(SOURCES)]
        assert shares.sum() == pytest.approx(1.0) and (shares > 0.05).all()  # ribs, vertebrae and iodine all there


def test_cli_names_missing_inputs_in_one_line(rendered, tmp_path, capsys):
    manifest, segmentation = rendered
    assert main(["--manifest", str(manifest), "--segmentation", str(tmp_path),
                 "--prediction", f"x={tmp_path}"]) == 2
    assert "no mask.nii.gz" in capsys.readouterr().err
    assert main(["--manifest", str(manifest), "--segmentation", str(segmentation),
                 "--prediction", f"x={tmp_path}"]) == 2
    assert "no de_soft/ predictions" in capsys.readouterr().err
    out = tmp_path / "t.md"
    assert main(["--manifest", str(manifest), "--segmentation", str(segmentation),
                 "--prediction", f"p={_prediction(manifest, tmp_path / 'p', 0.0)}", "--out", str(out)]) == 0
    assert "| body | all | p |" in out.read_text()
