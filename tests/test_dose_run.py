"""Dose evaluation of a test set: end to end through the bundle config on a tiny subject, and the one-line
errors of the command line."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from dose_fixtures import write_subject
from pipeline.dose.run import main

REPO = Path(__file__).resolve().parents[1]


def test_bundle_identical_sct_gives_full_gamma_and_zero_dvh_difference(tmp_path):
    from monai.bundle import ConfigParser

    record = write_subject(tmp_path / "data", "S1")
    pred = tmp_path / "run" / "predictions" / "S1"
    pred.mkdir(parents=True)
    (pred / "sct.nii.gz").write_bytes(Path(record["ct"]).read_bytes())
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame([{**record, "split": "test"}]).to_csv(manifest, index=False)
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles/mri_to_ct/configs/evaluate_dose.json"))
    parser.update({"output_dir": str(tmp_path / "run"), "manifest": str(manifest), "baselines": ["bulk_density"],
                   "photon_angles": [0.0, 180.0], "proton_angles": [90.0], "dose_grid_mm": 4.0,
                   "target_radius_mm": 12.0})
    assert not (tmp_path / "run" / "evaluation_dose").exists()
    parser.get_parsed_content("run")
    out = tmp_path / "run" / "evaluation_dose"
    table = pd.read_csv(out / "dose_results.csv")
    model = table[table["method"] == "pix2pix"].set_index(["region", "metric"])["value"]
    for modality in ("photon", "proton"):
        for region in ("body", "target"):
            assert model[(region, f"{modality}_gamma_2mm2pct")] == 100.0
        for metric in ("D98", "D50", "D2", "Dmean"):
            # the recomputed dose equals the plan dose up to float round-off (sparse sums): < 0.001 %
            assert abs(model[("target", f"{modality}_{metric}_diff_pct")]) < 1e-3
        assert model[("high_dose", f"{modality}_dose_mae_pct")] < 1e-3
    assert model[("beam0", "proton_range_shift_max_abs_mm")] == 0.0
    bulk = table[table["method"] == "bulk_density"].set_index(["region", "metric"])["value"]
    assert bulk[("beam0", "proton_range_shift_max_abs_mm")] > 1.0  # the missed bone shows up
    summary = pd.read_csv(out / "dose_summary.csv")
    assert set(summary["method"]) == {"pix2pix", "bulk_density"}
    assert "photon_gamma_2mm2pct" in (out / "dose_summary.md").read_text()
    ct_dose = nib.load(str(out / "doses" / "S1" / "ct_proton_dose.nii.gz"))
    sct_dose = nib.load(str(out / "doses" / "S1" / "pix2pix_proton_dose.nii.gz"))
    np.testing.assert_allclose(ct_dose.affine, sct_dose.affine)
    assert np.abs(np.linalg.norm(ct_dose.affine[:3, :3], axis=0) - 4.0).max() < 1e-6
    assert ct_dose.get_fdata().max() > 1.5
    for name in ("S1_photon_dvh.png", "S1_proton_slices.png"):
        assert (out / "figures" / "pix2pix" / name).stat().st_size > 0
    with pytest.raises(RuntimeError) as error:  # MONAI wraps the FileExistsError of a second run
        parser.get_parsed_content("run", lazy=False)
    assert isinstance(error.value.__cause__, FileExistsError)


def test_cli_mismatched_grid_is_one_clear_line(tmp_path, capsys):
    write_subject(tmp_path / "data", "S2")
    bad = tmp_path / "pred" / "S2"
    bad.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((30, 30, 19), np.int16), np.diag([-4.0, -4.0, 4.0, 1.0])), str(bad / "sct.nii.gz"))
    code = main(["--data-root", str(tmp_path / "data"), "--prediction-dir", str(tmp_path / "pred"),
                 "--output-dir", str(tmp_path / "out"), "--modalities", "protons"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "S2" in err and "sct.nii.gz" in err and "grid" in err and "Traceback" not in err


def test_cli_missing_prediction_and_missing_ct(tmp_path, capsys):
    record = write_subject(tmp_path / "data", "S3")
    (tmp_path / "pred").mkdir()
    code = main(["--data-root", str(tmp_path / "data"), "--prediction-dir", str(tmp_path / "pred"),
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "S3" in err and "sct.nii.gz" in err and len(err.splitlines()) == 1
    Path(record["ct"]).unlink()
    code = main(["--data-root", str(tmp_path / "data"), "--baselines", "bulk_density", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "S3" in err and "ct" in err and len(err.splitlines()) == 1
